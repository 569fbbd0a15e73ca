"""The pytest plugin, as a user meets it: test files run through pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "test_lobby.py"


def run(
    pytester: pytest.Pytester, source: str, *args: str, fresh: bool = False
) -> pytest.RunResult:
    """Run ``source`` as a user's test file: in this process (a second each), or with
    ``fresh`` in a new interpreter, for what only a fresh one can show (what is imported)."""
    pytester.makepyfile(test_user=source)
    # (schemathesis's plugin, installed for the suite, is no user's: 1.3 s per start)
    flags = ("-p", "no:cacheprovider", "-p", "no:schemathesis", *args)
    if fresh:
        return pytester.runpytest_subprocess(*flags)
    return pytester.runpytest_inprocess(*flags)


def test_the_readme_example_passes_as_is(pytester: pytest.Pytester) -> None:
    result = run(pytester, EXAMPLE.read_text())
    result.assert_outcomes(passed=4)


def test_it_works_in_trio_mode_too(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    source = EXAMPLE.read_text().replace("@pytest.mark.trio\n", "")
    result = run(pytester, source)
    result.assert_outcomes(passed=4)


WRONG = """
import pytest
from trio_wsproxy.testing import expect_message, wait_for_members

@pytest.mark.trio
async def test_wrong_expectation(wsproxy_relay, wsproxy_client):
    a = await wsproxy_client(group="g")
    b = await wsproxy_client(group="g")
    await wait_for_members(wsproxy_relay, 2, group="g")
    await a.send("hello")
    assert await expect_message(b, str) == "goodbye"
"""


def test_a_wrong_expectation_fails_readably(pytester: pytest.Pytester) -> None:
    result = run(pytester, WRONG)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 'hello' == 'goodbye'*"])


NEVER = """
import pytest
from trio_wsproxy.testing import expect_message, wait_for_members

@pytest.mark.trio
async def test_waits_for_nothing(wsproxy_client):
    a = await wsproxy_client(group="g", id="a")
    await expect_message(a, str, timeout=0.5)

@pytest.mark.trio
async def test_waits_for_members_that_never_come(wsproxy_relay):
    await wait_for_members(wsproxy_relay, 3, group="g", timeout=0.3)
"""


def test_waiting_for_what_never_comes_fails_within_its_timeout(pytester: pytest.Pytester) -> None:
    result = run(pytester, NEVER, "--durations=0")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*client 'a' (group 'g') received no str within 0.5s*",
            "*expected 3 members in group 'g' within 0.3s, it has 0*",
        ]
    )
    assert "Timeout" not in result.stdout.str()


SILENCE = """
import pytest
from trio_wsproxy.testing import expect_silence, wait_for_members

@pytest.mark.trio
async def test_expects_silence_wrongly(wsproxy_relay, wsproxy_client):
    a = await wsproxy_client(group="g")
    b = await wsproxy_client(group="g")
    await wait_for_members(wsproxy_relay, 2, group="g")
    await a.send("noise")
    await expect_silence(b)
"""


def test_unexpected_noise_is_reported(pytester: pytest.Pytester) -> None:
    result = run(pytester, SILENCE)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected silence for 0.3s but received 'noise'*"])


SYNC = """
def test_not_a_trio_test(wsproxy_relay):
    pass
"""


def test_without_trio_the_fixtures_say_what_is_missing(pytester: pytest.Pytester) -> None:
    result = run(pytester, SYNC)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*wsproxy_relay run in Trio*pytest.mark.trio*trio_mode*"])
    result = run(pytester, "import pytest\n@pytest.mark.trio\n" + SYNC.lstrip(), "-p", "no:trio")
    result.stdout.fnmatch_lines(["*wsproxy_relay need pytest-trio*"])


def test_sessions_without_the_fixtures_are_untouched(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        "import sys\ndef test_light():\n"
        "    assert 'trio_wsproxy.relay.relay' not in sys.modules\n"
        "    assert 'trio_websocket' not in sys.modules\n",
        fresh=True,
    )
    result.assert_outcomes(passed=1)
