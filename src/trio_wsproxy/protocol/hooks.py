"""The bodies of the back end's hooks: what the relay asks, and what the back end answers.

A hook is an HTTP POST from the relay to the application's back end, with a JSON object
for a body, answered by a JSON object (DESIGN.md §9; ``docs/backend.md``):

- the request: ``"hook"`` (``"connect"``, ``"join"``, ``"publish"``), the member's
  ``"id"``, the ``"group"``, its ``"remote"`` address and ``"info"`` (what the connect
  hook gave it, or null); for connect also ``"subprotocol"`` and the allow-listed
  ``"headers"`` and ``"cookies"``; for publish the payload as ``"text"`` or as
  ``"binary"`` (base64), and ``"to"`` for a message to one member;
- the answer: ``{"allow": true}`` — connect may add ``"id"``, ``"groups"`` and ``"info"``,
  publish ``"text"`` or ``"binary"`` to replace the payload — or ``{"allow": false,
  "status": 4xx, "reason": "..."}``.

:class:`HookRequest` and :class:`HookAnswer` are attrs classes, so a Python back end can
structure the bodies it gets with cattrs (``trio_wsproxy.backend``). The relay reads an
answer with :func:`parse_answer`, which checks everything it will act on: an answer it
cannot read is the back end failing, and the hook's failure policy decides.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs

CONNECT = "connect"
JOIN = "join"
PUBLISH = "publish"
HOOKS = (CONNECT, JOIN, PUBLISH)

#: The most bytes an answer's ``info`` may take, as JSON: it goes into presence events.
MAX_INFO_BYTES = 4096
#: The most characters of a refusal's reason the client is shown (a close reason and a
#: status line are short; the log keeps the same).
MAX_REASON_CHARS = 120
#: The status of a refusal whose answer names none, or names one outside 400–499.
DEFAULT_REFUSAL_STATUS = 403


class HookAnswerError(ValueError):
    """An answer the relay cannot act on (not JSON, a field of the wrong type...)."""


@attrs.frozen(kw_only=True)
class HookRequest:
    """What the relay asks the back end (the request's JSON body)."""

    hook: str
    #: The member's id (for connect: the id its URL asked for).
    id: str
    #: The group (for connect: its URL's group).
    group: str
    #: The member's address, ``HOST:PORT``.
    remote: str
    #: What the connect hook gave the member (None: nothing, or no connect hook).
    info: Any = None
    #: connect: the subprotocol chosen (``"wsproxy.v1"``, or None: the plain protocol).
    subprotocol: str | None = None
    #: connect: the request's headers and cookies that the relay passes on (its
    #: allow-lists: ``--hook-headers``, ``--hook-cookies``), header names lower-cased.
    headers: dict[str, str] = attrs.Factory(dict)
    cookies: dict[str, str] = attrs.Factory(dict)
    #: publish: the message's payload, as text, or as base64 for a binary message.
    text: str | None = None
    binary: str | None = None
    #: publish: the member the message is addressed to (None: the whole group).
    to: str | None = None

    def payload(self) -> bytes | str | None:
        """publish: the payload as the member sent it (bytes for binary, else str)."""
        if self.binary is not None:
            return base64.b64decode(self.binary)
        return self.text


@attrs.frozen(kw_only=True)
class HookAnswer:
    """What the back end answers (the response's JSON body)."""

    allow: bool
    #: A refusal's HTTP status (400–499) and reason, as the client sees them.
    status: int | None = None
    reason: str | None = None
    #: connect: the member's id instead of the one its URL asked for; the groups it may
    #: join (names, or prefixes ending in ``*``; None: as without the hook); what
    #: members of its groups see of it in presence (a JSON object).
    id: str | None = None
    groups: list[str] | None = None
    info: dict[str, Any] | None = None
    #: publish: a payload to send instead of the member's (text, or binary as base64).
    text: str | None = None
    binary: str | None = None

    def replacement(self) -> tuple[bool, bytes] | None:
        """publish: the payload to send instead, as (is text, bytes); None: keep it."""
        if self.text is not None:
            return True, self.text.encode()
        if self.binary is not None:
            return False, base64.b64decode(self.binary)
        return None


def request_body(request: HookRequest) -> bytes:
    """The JSON body of ``request`` (fields that do not apply to its hook left out)."""
    body: dict[str, Any] = {
        "hook": request.hook,
        "id": request.id,
        "group": request.group,
        "remote": request.remote,
        "info": request.info,
    }
    if request.hook == CONNECT:
        body["subprotocol"] = request.subprotocol
        body["headers"] = request.headers
        body["cookies"] = request.cookies
    elif request.hook == PUBLISH:
        if request.binary is not None:
            body["binary"] = request.binary
        else:
            body["text"] = request.text
        body["to"] = request.to
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def publish_request(
    member_id: str,
    group: str,
    remote: str,
    info: Any,
    text: bool,
    payload: bytes,
    to: str | None = None,
) -> HookRequest:
    """The publish hook's request for a message (a text one's payload must be UTF-8)."""
    if text:
        return HookRequest(
            hook=PUBLISH, id=member_id, group=group, remote=remote, info=info,
            text=payload.decode(), to=to,
        )  # fmt: skip
    return HookRequest(
        hook=PUBLISH, id=member_id, group=group, remote=remote, info=info,
        binary=base64.b64encode(payload).decode("ascii"), to=to,
    )  # fmt: skip


def parse_answer(body: bytes, hook: str) -> HookAnswer:
    """The back end's answer to the hook ``hook``, checked; HookAnswerError if the relay
    cannot act on it. A refusal's status outside 400–499 becomes 403, its reason is
    cut to MAX_REASON_CHARS printable characters."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HookAnswerError(f"the answer is not JSON: {exc}") from None
    except RecursionError:
        raise HookAnswerError("the answer is nested too deeply") from None
    if not isinstance(answer, dict):
        raise HookAnswerError("the answer is not a JSON object")
    allow = answer.get("allow")
    if not isinstance(allow, bool):
        raise HookAnswerError('the answer has no "allow": true or false')
    if not allow:
        status = answer.get("status")
        if not (isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500):
            status = DEFAULT_REFUSAL_STATUS
        reason = answer.get("reason")
        reason = _printable(reason) if isinstance(reason, str) and reason else None
        return HookAnswer(
            allow=False, status=status, reason=reason or f"refused by the {hook} hook"
        )
    fields: dict[str, Any] = {}
    if hook == CONNECT:
        member_id = answer.get("id")
        if member_id is not None:
            if not isinstance(member_id, str) or not member_id or not member_id.isprintable():
                raise HookAnswerError('"id" must be a non-empty printable string')
            fields["id"] = member_id
        groups = answer.get("groups")
        if groups is not None:
            if not isinstance(groups, list) or not all(
                isinstance(group, str) and group for group in groups
            ):
                raise HookAnswerError('"groups" must be a list of group names')
            fields["groups"] = groups
        info = answer.get("info")
        if info is not None:
            if not isinstance(info, dict):
                raise HookAnswerError('"info" must be a JSON object')
            shown = json.dumps(info, separators=(",", ":"), ensure_ascii=False)
            if not _is_unicode(shown):
                raise HookAnswerError('"info" must be Unicode text throughout')
            size = len(shown.encode())
            if size > MAX_INFO_BYTES:
                raise HookAnswerError(f'"info" takes {size} bytes: at most {MAX_INFO_BYTES}')
            fields["info"] = info
    elif hook == PUBLISH:
        text, binary = answer.get("text"), answer.get("binary")
        if text is not None and binary is not None:
            raise HookAnswerError(
                'an answer replaces the payload with "text" or "binary", not both'
            )
        if text is not None:
            if not isinstance(text, str) or not _is_unicode(text):
                raise HookAnswerError('"text" must be a string of Unicode text')
            fields["text"] = text
        elif binary is not None:
            if not isinstance(binary, str):
                raise HookAnswerError('"binary" must be a base64 string')
            try:
                base64.b64decode(binary, validate=True)
            except (binascii.Error, ValueError):
                raise HookAnswerError('"binary" is not valid base64') from None
            fields["binary"] = binary
    return HookAnswer(allow=True, **fields)


def _is_unicode(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (JSON lets a lone surrogate through)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` as one printable line of at most MAX_REASON_CHARS characters."""
    line = "".join(char if char.isprintable() else " " for char in text).strip()
    return line[:MAX_REASON_CHARS]
