"""For the application's back end: the relay's hooks and webhooks, typed (docs/backend.md).

A Python back end reads a hook's request with :func:`read_hook_request` (validated: a
body that is not one raises :class:`BadHookRequest`) and answers with
:func:`answer_body`::

    from trio_wsproxy.backend import HookAnswer, answer_body, read_hook_request

    request = read_hook_request(body)          # a HookRequest
    if request.hook == "publish" and request.text == "cheat":
        reply = HookAnswer(allow=False, status=422, reason="illegal move")
    else:
        reply = HookAnswer(allow=True)
    return answer_body(reply)                  # the JSON bytes to send back

A webhook's request is checked with :func:`verify` (its ``X-Wsproxy-Signature`` header
against the raw body) and read with :func:`decode_body` (a :class:`WebhookBody` of
:class:`WebhookEvent` objects)::

    from trio_wsproxy.backend import SIGNATURE_HEADER, SignatureError, decode_body, verify

    try:
        verify(secret, raw_body, request.headers.get(SIGNATURE_HEADER))
    except SignatureError:
        ...  # answer 401: not the relay's
    for event in decode_body(raw_body).events:  # de-duplicate by event.id
        ...

The classes are attrs classes: cattrs structures and unstructures them, so they fit a
back end that already uses attrs; the JSON is the one ``docs/backend.md`` specifies, so
a back end in any language answers the same.
"""

from __future__ import annotations

import json
from typing import Any

import cattrs

from .protocol.hooks import CONNECT, HOOKS, JOIN, PUBLISH, HookAnswer, HookRequest
from .protocol.webhooks import (
    SIGNATURE_HEADER,
    SignatureError,
    SignatureFormatError,
    SignatureMismatch,
    SignatureTooOld,
    WebhookBody,
    WebhookBodyError,
    WebhookEvent,
    decode_body,
    encode_body,
    sign,
    verify,
)

__all__ = [
    "CONNECT",
    "HOOKS",
    "JOIN",
    "PUBLISH",
    "SIGNATURE_HEADER",
    "BadHookRequest",
    "HookAnswer",
    "HookRequest",
    "SignatureError",
    "SignatureFormatError",
    "SignatureMismatch",
    "SignatureTooOld",
    "WebhookBody",
    "WebhookBodyError",
    "WebhookEvent",
    "answer_body",
    "decode_body",
    "encode_body",
    "read_hook_request",
    "sign",
    "verify",
]

_converter = cattrs.Converter(forbid_extra_keys=False)


class BadHookRequest(ValueError):
    """A body that is not a hook's request (not JSON, a field missing or mistyped)."""


def read_hook_request(body: bytes | str) -> HookRequest:
    """The hook request ``body`` holds (the JSON the relay POSTs), validated."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise BadHookRequest("a hook's request is a JSON object")
        request = _converter.structure(data, HookRequest)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path="body"))
        raise BadHookRequest(f"not a hook's request: {problems}") from None
    except json.JSONDecodeError as exc:
        raise BadHookRequest(f"not a hook's request: not JSON: {exc}") from None
    if request.hook not in HOOKS:
        raise BadHookRequest(f"unknown hook {request.hook!r}")
    return request


def answer_body(answer: HookAnswer) -> bytes:
    """The JSON body that answers a hook (fields left as None are left out)."""
    data: dict[str, Any] = {
        key: value for key, value in _converter.unstructure(answer).items() if value is not None
    }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
