"""The HTTP API fuzzed against its own OpenAPI document with schemathesis (a short run):
every answer must be one the document promises, in its shape, and nothing the fuzzer
sends may make the relay log a traceback or disturb a member's session."""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, assume, given, settings

from httpapi import AUTH, KEY, call
from test_api import members
from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.relay.openapi import openapi_document
from wsraw import OP_TEXT

# What no id may hold (openapi.ID_PATTERN's class).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Examples per operation and generation mode: a few seconds in all, every run the same.
EXAMPLES = 15


def fuzz(base_url: str) -> list[str]:
    """Run every operation of the document with positive and negative examples against
    the relay at ``base_url`` (blocking: schemathesis calls with requests); the failures."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                examples(operation, mode, base_url)()
            except BaseException as exc:  # (checks fail as groups: collect, then report)
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                report = "".join(traceback.format_exception_only(exc))[:3000]
                failures.append(f"{operation.label} ({mode.value}): {report}")
    return failures


def examples(operation: Any, mode: Any, base_url: str) -> Any:
    """The hypothesis test of ``operation``'s examples of generation ``mode``."""
    positive = mode is schemathesis.GenerationMode.POSITIVE

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if positive:
            # schemathesis's positive examples sometimes break the ids' pattern (a
            # control character; which ones depends on how the package was imported):
            # such an id is not schema-valid, and the relay's 400 for it is right. Only
            # examples that keep the pattern count here.
            ids = (case.path_parameters or {}).values()
            assume(not any(_CONTROL.search(str(each)) for each in ids))
        case.call_and_validate(base_url=base_url, headers=AUTH, timeout=10)

    return run


async def test_schemathesis_finds_nothing_and_members_never_notice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    config = RelayConfig(host="127.0.0.1", port=0, api_key=KEY, stream_timeout=2.0)
    async with open_relay(config) as relay:
        a, b = await members(relay, "canary", "a", "b")
        base_url = f"http://127.0.0.1:{relay.port}"
        with trio.fail_after(240):
            failures = await trio.to_thread.run_sync(fuzz, base_url)
        assert not failures, "\n\n".join(failures)
        # The members went on throughout, and the relay answers as before.
        with trio.fail_after(10):
            await a.send_frame(OP_TEXT, b"still here")
            assert await b.recv_message() == (OP_TEXT, b"still here")
        assert (await call(relay.port, "GET", "/api/groups/canary/members")).json == {
            "members": ["a", "b"]
        }
        assert relay.counters.api_requests[500] == 0
        assert sum(relay.counters.api_requests.values()) > 100
        for client in (a, b):
            await client.aclose()
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert not tracebacks, tracebacks[0].getMessage()
