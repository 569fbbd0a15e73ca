"""The whole relay's figures, made from those of its workers (``--workers``): the rules
of each family, the supervisor's memory of every worker, the workers' reports."""

from __future__ import annotations

import json

import pytest

from trio_wsproxy._workers.endpoint import WorkerLink
from trio_wsproxy._workers.figures import _Place
from trio_wsproxy.protocol.workers import WorkerReport, group_digest
from trio_wsproxy.relay.counters import Counters
from trio_wsproxy.relay.groups import LocalRegistry
from trio_wsproxy.relay.metrics import (
    Figures,
    WorkerFigures,
    render_metrics,
    render_whole_relay,
)


def exposition(
    members: int = 0,
    groups: int = 0,
    messages: int = 0,
    closes: dict[int, int] | None = None,
    up: bool = True,
) -> str:
    """One worker's /metrics body, as its relay renders it."""
    counters = Counters()
    counters.messages = messages
    counters.closes.update(closes or {})
    registry = _Registry(members, groups, up)
    return render_metrics(counters, registry).decode()


class _Registry(LocalRegistry):
    """A registry that reports the given counts (render_metrics reads only these)."""

    def __init__(self, members: int, groups: int, up: bool) -> None:
        super().__init__()
        self._fixed = (members, groups, up)

    @property
    def member_count(self) -> int:
        return self._fixed[0]

    @property
    def group_count(self) -> int:
        return self._fixed[1]

    @property
    def up(self) -> bool:  # type: ignore[override]
        return self._fixed[2]

    @property
    def metric_label(self) -> str:  # type: ignore[override]
        return "RedisBackplane"


def worker(text: str, groups: set[str] | None = None, live: bool = True) -> WorkerFigures:
    digests = None if groups is None else frozenset(map(group_digest, groups))
    return WorkerFigures(Figures.parse(text), digests, live)


def values(body: bytes) -> dict[str, float]:
    parsed = Figures.parse(body.decode())
    return {
        name + (str(dict(labels)) if labels else ""): value
        for (_, name, labels), value in parsed.values.items()
    }


def test_one_worker_reads_as_itself_with_the_workers_figures_after() -> None:
    own = exposition(members=3, groups=1, messages=7, closes={1001: 2})
    body = render_whole_relay([worker(own, {"lobby"})], configured=1).decode()
    assert body.startswith(own)  # every family, name, label, help and order as it was
    assert body.removeprefix(own).splitlines() == [
        "# HELP trio_wsproxy_workers Worker processes the relay runs (--workers)",
        "# TYPE trio_wsproxy_workers gauge",
        "trio_wsproxy_workers 1.0",
        "# HELP trio_wsproxy_workers_reporting Workers whose figures are in this scrape; "
        "the totals keep the last counters of one that did not answer in time",
        "# TYPE trio_wsproxy_workers_reporting gauge",
        "trio_wsproxy_workers_reporting 1.0",
    ]


def test_counters_and_members_are_summed_and_series_of_each_worker_kept() -> None:
    one = exposition(members=3, messages=7, closes={1001: 2})
    two = exposition(members=4, messages=5, closes={1000: 1, 1001: 1})
    total = values(render_whole_relay([worker(one, set()), worker(two, set())], 2))
    assert total["trio_wsproxy_members"] == 7
    assert total["trio_wsproxy_messages_total"] == 12
    assert total["trio_wsproxy_closes_total{'code': '1000'}"] == 1
    assert total["trio_wsproxy_closes_total{'code': '1001'}"] == 3
    assert total["trio_wsproxy_workers"] == 2
    assert total["trio_wsproxy_workers_reporting"] == 2


def test_a_group_on_two_workers_is_one_group() -> None:
    one = exposition(groups=2)
    two = exposition(groups=2)
    total = values(render_whole_relay([worker(one, {"a", "b"}), worker(two, {"b", "c"})], 2))
    assert total["trio_wsproxy_groups"] == 3  # a, b, c: not 4


def test_groups_of_a_worker_without_digests_are_its_own_count() -> None:
    total = values(render_whole_relay([worker(exposition(groups=2), {"a"}),
                                       worker(exposition(groups=5), None)], 2))  # fmt: skip
    assert total["trio_wsproxy_groups"] == 1 + 5


def test_the_backplane_is_up_only_if_it_is_up_for_every_worker() -> None:
    up = worker(exposition(up=True), set())
    down = worker(exposition(up=False), set())
    label = "trio_wsproxy_backplane_up{'kind': 'RedisBackplane'}"
    assert values(render_whole_relay([up, up], 2))[label] == 1
    assert values(render_whole_relay([up, down], 2))[label] == 0


def test_a_worker_that_did_not_answer_keeps_its_counters_but_not_its_gauges() -> None:
    answered = worker(exposition(members=3, messages=7), {"a"})
    silent = worker(exposition(members=4, messages=5, up=False), {"b"}, live=False)
    total = values(render_whole_relay([answered, silent], 2))
    assert total["trio_wsproxy_messages_total"] == 12
    assert total["trio_wsproxy_members"] == 3
    assert total["trio_wsproxy_groups"] == 1
    assert total["trio_wsproxy_backplane_up{'kind': 'RedisBackplane'}"] == 1
    assert total["trio_wsproxy_workers_reporting"] == 1


def test_series_come_sorted_whichever_worker_has_them_first() -> None:
    one = worker(exposition(closes={1001: 1}), set())
    two = worker(exposition(closes={1000: 1}), set())
    assert render_whole_relay([one, two], 2) == render_whole_relay([two, one], 2)


def report(instance: str, messages: int, members: int = 0) -> tuple[WorkerReport, Figures]:
    text = exposition(members=members, messages=messages)
    return WorkerReport(instance, text, frozenset()), Figures.parse(text)


def messages_of(place: _Place, live: bool = True) -> float:
    share = place.whole(live)
    assert share is not None
    return values(render_whole_relay([share], 2))["trio_wsproxy_messages_total"]


def test_a_restarted_worker_adds_to_what_its_place_counted() -> None:
    place = _Place()
    assert place.whole(live=False) is None  # never heard: no share
    assert place.heard(*report("first", messages=10))
    assert place.heard(*report("second", messages=3))  # a new process, counting from 0
    assert messages_of(place) == 13


def test_a_late_answer_from_a_replaced_worker_is_not_news() -> None:
    place = _Place()
    place.heard(*report("first", messages=10))
    place.heard(*report("second", messages=3))
    assert not place.heard(*report("first", messages=11))
    assert messages_of(place) == 13


def test_counters_never_go_down_when_two_scrapes_answers_cross() -> None:
    place = _Place()
    place.heard(*report("first", messages=10, members=5))
    place.heard(*report("first", messages=8, members=4))  # asked earlier, answered later
    assert messages_of(place) == 10
    share = place.whole(live=True)
    assert share is not None
    assert values(render_whole_relay([share], 2))["trio_wsproxy_members"] == 4  # a gauge: now


def test_a_worker_report_round_trips_and_bad_ones_say_why() -> None:
    sent = WorkerReport("abc", exposition(), frozenset({group_digest("lobby")}))
    assert WorkerReport.decode(sent.encode()) == sent
    bad = {
        b"not json": "not JSON",
        b"[]": "not a JSON object",
        json.dumps({"exposition": "", "groups": []}).encode(): "without its instance",
        json.dumps({"instance": "a", "groups": []}).encode(): "without its exposition",
        json.dumps({"instance": "a", "exposition": "", "groups": [1]}).encode(): "groups",
    }
    for data, words in bad.items():
        with pytest.raises(ValueError, match=words):
            WorkerReport.decode(data)


def test_group_digests_name_no_group_and_tell_groups_apart() -> None:
    assert group_digest("lobby") == group_digest("lobby")
    assert group_digest("lobby") != group_digest("kitchen")
    assert "lobby" not in group_digest("lobby") and len(group_digest("lobby")) == 16


def test_a_worker_link_is_checked() -> None:
    link = WorkerLink("dir", 2, 3)
    assert link.report_socket.endswith("worker-2.sock")
    assert link.flags() == ["--worker-dir=dir", "--worker-index=2", "--worker-count=3"]
    for index, count in ((0, 3), (4, 3), (1, 1)):
        with pytest.raises(ValueError, match="--worker-"):
            WorkerLink("dir", index, count)
