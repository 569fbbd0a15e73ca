"""What a worker tells its supervisor (``protocol/workers.py``), without a network: the
exact bytes of a report, round trips, and that bytes which are not a report get past
``decode`` as nothing but a ValueError that says what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_wsproxy.protocol.workers import WorkerReport, group_digest

reports = st.builds(
    WorkerReport,
    instance=st.text(min_size=1),
    exposition=st.text(),
    groups=st.frozensets(st.text()),
)
# JSON objects with some of a report's fields, of any kind, and one it does not have.
objects = st.dictionaries(
    st.sampled_from(["instance", "exposition", "groups", "x"]),
    st.none() | st.integers() | st.text() | st.lists(st.text()),
)


def test_a_report_is_these_bytes() -> None:
    # The supervisor and its workers are one version, but the bytes are pinned all the
    # same: groups sorted (one report, one encoding), JSON's default ASCII escapes.
    report = WorkerReport("7f3a", "m 1.0\nc\u00e9 2.0\n", frozenset({"b2", "a1"}))
    assert report.encode() == (
        b'{"instance": "7f3a", "exposition": "m 1.0\\nc\\u00e9 2.0\\n", "groups": ["a1", "b2"]}'
    )


@given(reports)
def test_every_report_round_trips(report: WorkerReport) -> None:
    assert WorkerReport.decode(report.encode()) == report


@given(reports)
def test_a_report_lists_its_groups_sorted_so_one_report_is_one_encoding(
    report: WorkerReport,
) -> None:
    assert json.loads(report.encode())["groups"] == sorted(report.groups)


def test_a_report_of_a_worker_without_groups_round_trips() -> None:
    report = WorkerReport("a", "", frozenset())
    assert WorkerReport.decode(report.encode()) == report


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"", "not JSON"),
        (b'{"instance": "a"', "not JSON"),
        (b'"a report"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"instance": "", "exposition": "", "groups": []}', "without its instance"),
        (b'{"instance": 7, "exposition": "", "groups": []}', "without its instance"),
        (b'{"instance": "a", "exposition": null, "groups": []}', "without its exposition"),
        (b'{"instance": "a", "exposition": ""}', "groups are not a list of strings"),
        (b'{"instance": "a", "exposition": "", "groups": "lobby"}', "not a list of strings"),
        (b'{"instance": "a", "exposition": "", "groups": [null]}', "not a list of strings"),
    ],
)
def test_what_is_not_a_report_is_refused_saying_why(data: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        WorkerReport.decode(data)


@given(st.binary())
def test_no_bytes_get_past_decode_as_anything_but_a_report_or_a_value_error(data: bytes) -> None:
    try:
        report = WorkerReport.decode(data)
    except ValueError:
        return
    assert report.instance and isinstance(report.exposition, str)
    assert all(isinstance(group, str) for group in report.groups)


@given(objects)
def test_json_objects_are_reports_only_when_every_field_is_right(fields: dict[str, Any]) -> None:
    data = json.dumps(fields).encode()
    right = (
        isinstance(fields.get("instance"), str)
        and fields["instance"] != ""
        and isinstance(fields.get("exposition"), str)
        and isinstance(fields.get("groups"), list)
    )
    if right:
        assert WorkerReport.decode(data) == WorkerReport(
            fields["instance"], fields["exposition"], frozenset(fields["groups"])
        )
    else:
        with pytest.raises(ValueError, match="a worker report"):
            WorkerReport.decode(data)


def test_a_group_digest_is_these_16_hex_digits() -> None:
    # Pinned: the supervisor counts a group on two workers once by comparing these.
    assert group_digest("lobby") == "a1e1048535af1236"
    assert group_digest("Lobby") != group_digest("lobby")
