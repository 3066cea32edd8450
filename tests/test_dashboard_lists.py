"""The dashboard's year-two parts (spec 14): lists sorted by last activity and filtered by
a time range (the read API takes the same), CSV downloads of every list, the overview's
totals and chart axes, a stuck age in words."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from flowtracker.engine.parsing import parse_line
from flowtracker.engine.timestamps import format_ns
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import views
from flowtracker.settings import Settings
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Quarantined, Store, SubjectFilter
from flowtracker.web import create_app
from flowtracker.web.charts import sparkline
from flowtracker.web.templating import duration
from tests.conftest import T0, Clock, flow

HOUR = 3_600
# Instance n first seen at hour n; instance 0 gets a callback again last, at hour 5.
IDS = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(5)]


@pytest.fixture
def client(target: str) -> Iterator[TestClient]:
    store = open_store(target)
    clock = Clock()
    pipeline = Pipeline(store, clock)
    for instance in IDS:
        pipeline.ingest([parse_line(flow("custom", 1, instance))])
        clock.advance(HOUR)
    pipeline.ingest([parse_line(flow("completed", 9, IDS[0]))])
    store.quarantine(Quarantined(b"=cmd|' /C calc'!A0", "text/plain",
                                 {"code": "invalid_json", "message": "=1+1"},
                                 "POST /callbacks/flow"), format_ns(clock()))  # fmt: skip
    store.close()
    with TestClient(create_app(Settings(db_path=target))) as client:
        yield client


def _ids(client: TestClient, query: str) -> list[str]:
    answer = client.get(f"/instances?{query}")
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def at_hour(n: int) -> str:
    return format_ns(T0 + n * HOUR * 10**9)


def test_lists_sort_by_last_activity_and_filter_by_a_time_range(client: TestClient) -> None:
    assert _ids(client, "") == IDS  # first seen first
    assert _ids(client, "sort=last_activity") == [IDS[0], IDS[4], IDS[3], IDS[2], IDS[1]]
    # Keyset pages by activity: two at a time, nothing missed or repeated.
    seen, cursor = [], None
    while True:
        more = {"cursor": cursor} if cursor else {}
        page = client.get("/instances", params={"sort": "last_activity", "limit": 2, **more})
        seen += [item["id"] for item in page.json()["items"]]
        if (cursor := page.json()["next"]) is None:
            break
    assert seen == [IDS[0], IDS[4], IDS[3], IDS[2], IDS[1]]
    assert _ids(client, f"since={at_hour(2)}&until={at_hour(4)}") == [IDS[2], IDS[3]]
    assert _ids(client, f"since={at_hour(3)}&sort=last_activity") == [IDS[0], IDS[4], IDS[3]]
    day = at_hour(0)[:10]
    assert _ids(client, f"since={day}&until={day}") == IDS  # a date: the whole day
    bad = client.get("/instances?sort=newest&since=yesterday")
    assert bad.status_code == 422
    assert set(bad.json()["error"]["details"]) == {"sort", "since"}
    page = client.get("/ui/instances?sort=last_activity").text
    assert page.index(IDS[0]) < page.index(IDS[4]) < page.index(IDS[1])
    assert 'option value="last_activity" selected' in page


def test_every_list_downloads_as_csv(client: TestClient) -> None:
    answer = client.get("/ui/instances.csv?sort=last_activity&state=in_progress")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert 'filename="instances.csv"' in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [row["id"] for row in rows] == [IDS[4], IDS[3], IDS[2], IDS[1]]
    assert rows[0]["state"] == "in_progress" and rows[0]["event_count"] == "1"
    assert (
        "/ui/instances.csv?sort=last_activity"
        in client.get("/ui/instances?sort=last_activity").text
    )
    documents = client.get("/ui/documents.csv")
    assert documents.text.splitlines()[0].startswith("id,title,state")
    kept = list(csv.DictReader(io.StringIO(client.get("/ui/quarantine.csv").text)))
    assert kept[0]["code"] == "invalid_json"
    # A cell a spreadsheet would run as a formula is written as text.
    assert kept[0]["message"] == "'=1+1"
    assert client.get("/ui/instances.csv?since=nonsense").status_code == 422


def test_the_overview_has_totals_axes_and_the_stuck_age_in_words(client: TestClient) -> None:
    page = client.get("/").text
    assert 'id="instances-total">5<' in page
    assert 'id="callbacks-total">6<' in page
    assert "stuck (7 days quiet)" in page
    assert 'class="x-axis"' in page and 'class="y-axis"' in page
    assert "callbacks per minute (vertical)" in page


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(45, "45 s"), (60, "1 min"), (90, "90 s"), (1_200, "20 min"), (3 * 3_600, "3 h"),
     (5_400, "90 min"), (7_200, "2 h"), (9_000, "2.5 h"), (86_400, "1 day"),
     (7 * 86_400, "7 days"), (36 * 3_600, "36 h")],
)  # fmt: skip
def test_a_duration_in_words(seconds: int, words: str) -> None:
    assert duration(seconds) == words


def test_the_chart_marks_every_quarter_hour() -> None:
    now = T0 + 7 * 60 * 10**9  # 08:07
    ticks = sparkline({}, now).ticks
    assert [tick.label for tick in ticks] == ["07:15", "07:30", "07:45", "08:00"]
    assert ticks[0].percent == pytest.approx(100 * 7 / 59, abs=0.01)


def test_pages_by_activity_keep_their_order_through_ties(any_store: Store) -> None:
    """Subjects taken in one batch share the time of their last receipt: `seq` orders them,
    and a page boundary among them loses and repeats nothing."""
    clock = Clock()
    pipeline = Pipeline(any_store, clock)
    tied = [f"00000000-0000-4000-8000-0000000001{n:02d}" for n in range(7)]
    pipeline.ingest([parse_line(flow("custom", 1, instance)) for instance in tied])
    clock.advance(1)
    pipeline.ingest([parse_line(flow("custom", 2, tied[3]))])
    where, seen, cursor = SubjectFilter(by_activity=True), [], None
    while True:
        page = views.instances(any_store, where, views.Page(2, cursor))
        seen += [item["id"] for item in page["items"]]
        if (cursor := page["next"]) is None:
            break
    assert seen == [tied[3], *reversed([t for t in tied if t != tied[3]])]
