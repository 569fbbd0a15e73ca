"""A skip says why: ``pytest -ra`` gives the reason and the line that skipped, for a skip
raised inside a Trio test too (the README promises it of the suite's own skips)."""

from __future__ import annotations

import pytest

FLAGS = ("-ra", "-p", "no:cacheprovider", "-p", "no:schemathesis")

SKIPS = """
import pytest
import trio


def needs_the_tool():
    pytest.skip("the tool is not installed")


@pytest.fixture
async def tool():
    needs_the_tool()
    yield


@pytest.mark.trio
async def test_skipped_in_the_test():
    needs_the_tool()


@pytest.mark.trio
async def test_skipped_in_a_task():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)
        needs_the_tool()


@pytest.mark.trio
async def test_skipped_in_a_fixture(tool):
    pass


@pytest.mark.trio
async def test_expected_to_fail():
    pytest.xfail("the tool is known to be broken")
"""


def test_a_skip_inside_a_trio_test_reports_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=SKIPS)
    lines = (pytester.path / "test_user.py").read_text().splitlines()
    line = lines.index('    pytest.skip("the tool is not installed")') + 1
    result = pytester.runpytest_inprocess(*FLAGS)
    result.assert_outcomes(skipped=3, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            f"SKIPPED [[]3[]] test_user.py:{line}: the tool is not installed",
            "XFAIL test_user.py::test_expected_to_fail - the tool is known to be broken",
        ]
    )
    result.stdout.no_fnmatch_line("*_pytest*Skipped*")


SUITE_SKIP = """
import pytest
import trio

from browserdriver import missing


@pytest.mark.trio
async def test_needs_node():
    async with trio.open_nursery():
        missing("node (Node.js 20 or newer) is not installed")
"""


def test_the_suites_own_skips_report_their_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/browserdriver.py's skip, as a browser test meets it without Node.js."""
    monkeypatch.delenv("CI", raising=False)  # on CI it fails instead of skipping
    pytester.makepyfile(test_user=SUITE_SKIP)
    result = pytester.runpytest_inprocess(*FLAGS)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] *browserdriver.py:*: node (Node.js 20 or newer) is not installed"]
    )


def test_a_failure_next_to_a_skip_is_not_hidden(pytester: pytest.Pytester) -> None:
    """Only a group whose one exception is the skip becomes that skip."""
    pytester.makepyfile(
        test_user="""
import pytest
import trio


async def broken():
    raise RuntimeError("broken")


@pytest.mark.trio
async def test_skip_and_failure():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broken)
        await trio.sleep(0.01)
        pytest.skip("not reached alone")
"""
    )
    result = pytester.runpytest_inprocess(*FLAGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: broken*"])
