"""The dashboard's pages in process: what each shows, escaping, search, paging, sign-in."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from flowtracker.engine.parsing import parse_flow
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.settings import Settings
from flowtracker.web import create_app
from flowtracker.web.auth import SESSION_COOKIE, SESSION_SECONDS, session_cookie, valid_session
from tests.conftest import DOCUMENT, INSTANCE, document_form, flow

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
OTHER = "00000000-0000-4000-8000-000000000001"
READ_TOKEN = "read-secret-4711"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes (enough to find `data-*` markers)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def having(self, attribute: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.tags if attribute in attrs]

    def links(self) -> list[str]:
        return [attrs[name] for _, attrs in self.tags for name in ("href", "src") if name in attrs]


def counts(html: str) -> dict[str, int]:
    """The overview's numbers, by their `data-count` name."""
    return {
        name: int(value.replace(",", ""))
        for name, value in re.findall(r'data-count="([^"]+)">([\d,]+)<', html)
    }


@pytest.fixture
def client(target: str) -> Iterator[TestClient]:
    """The dashboard on each backend in turn."""
    with TestClient(create_app(Settings(db_path=target))) as client:
        yield client


@pytest.fixture
def signed(target: str) -> Iterator[TestClient]:
    settings = Settings(db_path=target, read_token=READ_TOKEN)
    with TestClient(create_app(settings)) as client:
        yield client


def post_flow(client: TestClient, body: bytes) -> dict[str, Any]:
    response = client.post("/callbacks/flow", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_the_overview_counts_what_status_counts(client: TestClient) -> None:
    post_flow(client, flow("authentication_attempted", 1))
    post_flow(client, flow("completed", 5))
    post_flow(client, flow("completed", 5))  # a duplicate
    post_flow(client, flow("custom", 3))  # late
    post_flow(client, flow("cancelled", 9))  # illegal after completed
    post_flow(client, flow("custom", 1, instance=OTHER))
    client.post("/callbacks/flow", content=b"{", headers=JSON)  # quarantined
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert counts(page.text) == {
        "in_progress": 1,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "rejected": 0,
        "timed_out": 0,
        "preparation": 0,
        "awaiting_start": 0,
        "pending": 0,
        "closed": 0,
        "canceled": 0,
        "timedout": 0,
        "document_error": 0,
        "applied": 4,
        "illegal": 1,
        "ignored": 0,
        "duplicate": 1,
        "out_of_order": 1,
        "quarantined": 1,
    }
    assert "6 in all · peak 6/min" in page.text  # the sparkline counts every delivery
    anomalies = page.text[page.text.index('id="anomalies"') :]
    assert "instance already completed" in anomalies
    assert "invalid_json" in anomalies


def test_the_overview_lists_stuck_instances_quietest_first(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "ui.db"), stuck_age_seconds=1)
    third = "00000000-0000-4000-8000-000000000003"
    with TestClient(create_app(settings)) as client:
        post_flow(client, flow("custom", 1, instance=OTHER))
        post_flow(client, flow("custom", 1))
        post_flow(client, flow("custom", 1, instance=third))
        post_flow(client, flow("completed", 2, instance=third))
        time.sleep(1.1)  # the stuck age is one second; received_at is the wall clock
        page = client.get("/").text
    stuck = page[page.index('id="stuck"') : page.index('id="anomalies"')]
    listed = [
        a["title"]
        for a in Elements(stuck).having("title")
        if a["title"] in (OTHER, INSTANCE, third)
    ]
    assert listed == [OTHER, INSTANCE]


def test_the_instance_page_draws_the_lifecycle_and_the_timeline_in_event_order(
    client: TestClient,
) -> None:
    post_flow(client, flow("completed", 10))
    post_flow(client, flow("authentication_attempted", 2))  # late
    post_flow(client, flow("custom", 5))  # late
    post_flow(client, flow("custom", 5))  # duplicate
    post_flow(client, flow("timed_out", 12))  # illegal
    page = client.get(f"/ui/instances/{INSTANCE}")
    assert page.status_code == 200
    elements = Elements(page.text)
    current = [n for n in elements.having("data-state") if "current" in n["class"].split()]
    assert [n["data-state"] for n in current] == ["completed"]
    assert {n["data-state"] for n in elements.having("data-state")} == {
        "in_progress",
        "completed",
        "failed",
        "cancelled",
        "rejected",
        "timed_out",
    }
    timeline = [(e["data-type"], e["data-outcome"], "late" in e["class"].split())
                for e in elements.having("data-outcome")]  # fmt: skip
    assert timeline == [
        ("authentication_attempted", "applied", True),
        ("custom", "applied", True),
        ("completed", "applied", False),
        ("timed_out", "illegal", False),
    ]
    assert "instance already completed" in page.text
    assert "2 deliveries" in page.text
    assert "Recorded without a change of state" in page.text


def test_the_document_page_shows_snapshots_and_the_document_lifecycle(
    client: TestClient,
) -> None:
    for status, version in (("pending", 2), ("closed", 4), ("preparation", 1)):
        response = client.post(
            "/callbacks/document", content=document_form(status, version, version), headers=FORM
        )
        assert response.status_code == 200
    page = client.get(f"/ui/documents/{DOCUMENT}")
    assert page.status_code == 200
    elements = Elements(page.text)
    current = [n["data-state"] for n in elements.having("data-state") if "current" in n["class"]]
    assert current == ["closed"]
    assert [e["data-type"] for e in elements.having("data-outcome")] == [
        "preparation",
        "pending",
        "closed",
    ]
    assert "Lease agreement" in page.text


HOSTILE = "\"'><img src=x onerror=alert(1)><script>alert('x')</script>"


def test_everything_from_a_payload_is_escaped(client: TestClient) -> None:
    post_flow(client, flow("custom", 1, callback_name=HOSTILE))
    client.post(
        "/callbacks/document", content=document_form("pending", 1, title=HOSTILE), headers=FORM
    )
    client.post("/callbacks/flow", content=HOSTILE.encode(), headers=JSON)
    pages = [
        "/",
        f"/ui/instances/{INSTANCE}",
        f"/ui/documents/{DOCUMENT}",
        "/ui/documents",
        "/ui/quarantine",
        f"/ui/instances?q={quote(HOSTILE)}",
        f"/ui/documents?q={quote(HOSTILE)}",
    ]
    for path in pages:
        elements = Elements(client.get(path).text)
        assert not [tag for tag, _ in elements.tags if tag == "img"], path
        assert not [a for _, a in elements.tags if any(n.startswith("on") for n in a)], path
        scripts = [a.get("src") for tag, a in elements.tags if tag == "script"]
        assert scripts == ["/ui/static/dashboard.js"], path
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in client.get("/ui/quarantine").text


def test_pages_carry_a_content_security_policy_and_are_not_cached(client: TestClient) -> None:
    for path in ("/", "/ui/instances", "/ui/quarantine", "/ui/instances/nope", "/ui/nope"):
        headers = client.get(path).headers
        assert headers["content-security-policy"].startswith("default-src 'self'"), path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_every_asset_is_served_by_flowtracker(client: TestClient) -> None:
    post_flow(client, flow("custom", 1))
    for path in ("/", "/ui/instances", f"/ui/instances/{INSTANCE}", "/ui/quarantine"):
        links = Elements(client.get(path).text).links()
        assert links
        assert all(link.startswith(("/", "?", "#")) and not link.startswith("//")
                   for link in links), links  # fmt: skip
    for asset, kind in (
        ("dashboard.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ):
        response = client.get(f"/ui/static/{asset}")
        assert (response.status_code, response.headers["content-type"].split(";")[0]) == (
            200,
            kind,
        )


def test_search_by_id_prefix_and_an_exact_id_opens_the_instance(client: TestClient) -> None:
    ids = [
        f"{prefix}-0000-4000-8000-000000000000" for prefix in ("aaaa0001", "aaaa0002", "bbbb0001")
    ]
    for instance in ids:
        post_flow(client, flow("custom", 1, instance=instance))
    found = Elements(client.get("/ui/instances?q=AAAA").text).having("title")
    assert sorted({a["title"] for a in found if a["title"] in ids}) == ids[:2]
    exact = client.get(f"/ui/instances?q={ids[2]}", follow_redirects=False)
    assert (exact.status_code, exact.headers["location"]) == (303, f"/ui/instances/{ids[2]}")
    assert "Nothing matches “zzz”" in client.get("/ui/instances?q=zzz").text


def test_lists_filter_by_state_and_page_through_everything(client: TestClient) -> None:
    ids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(7)]
    for number, instance in enumerate(ids):
        post_flow(client, flow("completed" if number % 2 else "custom", 1, instance=instance))
    pages: list[list[str]] = []
    url = "/ui/instances?limit=2&state=completed"
    while url:
        html = client.get(url).text
        pages.append([a["title"] for a in Elements(html).having("title") if a["title"] in ids])
        following = [a["href"] for a in Elements(html).having("rel") if a["rel"] == "next"]
        url = "/ui/instances" + following[0] if following else ""
    assert pages == [ids[1:4:2], ids[5:6]]  # two a page: the limit is kept


def test_a_bad_filter_is_an_html_page_naming_the_field(client: TestClient) -> None:
    page = client.get("/ui/instances?state=done")
    assert page.status_code == 422
    assert "<h1>invalid query: state: must be one of in_progress, completed," in page.text
    missing = client.get("/ui/documents/12345")
    assert missing.status_code == 404
    assert "no document &#39;12345&#39;" in missing.text


def test_the_pulse_changes_with_every_delivery_and_quarantined_request(
    client: TestClient,
) -> None:
    def pulse(query: str = "") -> str:
        response = client.get(f"/ui/pulse{query}")
        assert response.headers["cache-control"] == "no-store"
        found: str = response.json()["pulse"]
        return found

    seen = [pulse()]
    post_flow(client, flow("custom", 1))
    seen.append(pulse())
    post_flow(client, flow("custom", 1))  # a duplicate
    seen.append(pulse())
    for _ in range(2):  # the same malformed body twice: counted twice
        client.post("/callbacks/flow", content=b"{", headers=JSON)
        seen.append(pulse())
    assert len(set(seen)) == 5
    assert pulse() == seen[-1]


def test_a_subject_page_watches_its_own_subject_only(client: TestClient) -> None:
    mine = f"?flow={INSTANCE.upper()}"
    post_flow(client, flow("custom", 1))
    before = client.get(f"/ui/pulse{mine}").json()["pulse"]
    post_flow(client, flow("custom", 1, instance=OTHER))
    assert client.get(f"/ui/pulse{mine}").json()["pulse"] == before
    post_flow(client, flow("custom", 1))  # a duplicate delivery to this one
    assert client.get(f"/ui/pulse{mine}").json()["pulse"] != before
    page = Elements(client.get(f"/ui/instances/{INSTANCE}").text)
    assert [a["data-pulse-url"] for a in page.having("data-pulse-url")] == [
        f"/ui/pulse?flow={INSTANCE}"
    ]


def test_the_overview_pulse_moves_with_the_minute(client: TestClient) -> None:
    found = client.get("/ui/pulse?minute=1").json()["pulse"]
    assert re.fullmatch(r"0@\d{4}-\d\d-\d\dT\d\d:\d\d", found)


def test_a_document_id_with_a_slash_can_be_read(client: TestClient) -> None:
    odd = "lease/2025 #1"
    form = document_form("pending", 1).replace(DOCUMENT.encode(), quote(odd, safe="").encode())
    assert client.post("/callbacks/document", content=form, headers=FORM).status_code == 200
    assert client.get(f"/documents/{quote(odd, safe='')}").json()["id"] == odd
    listed = Elements(client.get("/ui/documents").text).having("title")
    links = [a["href"] for a in listed if a.get("title") == odd]
    assert links == ["/ui/documents/lease%2F2025%20%231"]
    page = client.get(links[0])
    assert page.status_code == 200
    assert "lease/2025 #1" in page.text


def test_the_quarantine_page_shows_a_preview_and_links_the_whole_body(
    client: TestClient,
) -> None:
    big = b'{"x": "' + b"a" * 10_000 + b"<script>"
    client.post("/callbacks/flow", content=big, headers=JSON)
    page = client.get("/ui/quarantine").text
    assert "10,015 bytes" in page
    assert "a" * 4_000 in page and "a" * 5_000 not in page
    links = [a["href"] for a in Elements(page).having("href") if a["href"].endswith("/body")]
    assert len(links) == 1
    whole = client.get(links[0])
    assert (whole.status_code, whole.content) == (200, big)
    assert whole.headers["content-type"] == "text/plain; charset=utf-8"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ui/quarantine/0000/body").status_code == 404


def test_the_overview_shows_anomalies_newest_first_whatever_their_kind(
    client: TestClient,
) -> None:
    post_flow(client, flow("completed", 5))
    client.post("/callbacks/flow", content=b"{", headers=JSON)
    post_flow(client, flow("cancelled", 9))  # illegal, and the newest
    html = client.get("/").text
    anomalies = html[html.index('id="anomalies"') :]
    assert anomalies.index("instance already completed") < anomalies.index("invalid_json")


def test_times_are_shown_in_utc_to_the_millisecond(client: TestClient) -> None:
    post_flow(client, flow("custom", 1, event_created="2021-03-10T18:00:01.25+02:00"))
    html = client.get(f"/ui/instances/{INSTANCE}").text
    assert 'title="2021-03-10T18:00:01.25+02:00">2021-03-10 16:00:01.250</time>' in html


def test_an_unknown_dashboard_path_is_an_html_404(client: TestClient) -> None:
    response = client.get("/ui/nothing/here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "no such page: /ui/nothing/here" in response.text


def test_with_a_read_token_every_page_asks_to_sign_in(signed: TestClient) -> None:
    for path in ("/", "/ui/instances?state=completed", f"/ui/instances/{INSTANCE}"):
        response = signed.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login?next=%2F")
    pulse = signed.get("/ui/pulse")
    assert (pulse.status_code, pulse.json()) == (
        401,
        {
            "error": {
                "code": "unauthorized",
                "message": "sign in to the dashboard again",
                "details": None,
            }
        },
    )
    assert signed.get("/ui/login").status_code == 200


def sign_in(client: TestClient, token: str, target: str) -> httpx.Response:
    """Posts the sign-in form, as a browser would encode it; the redirect is not followed."""
    form = urlencode({"token": token, "next": target}).encode()
    return client.post("/ui/login", content=form, headers=FORM, follow_redirects=False)


def test_signing_in_sets_a_cookie_that_is_not_the_token(signed: TestClient) -> None:
    wrong = signed.post("/ui/login", content=b"token=nope&next=%2Fui%2Fquarantine", headers=FORM)
    assert wrong.status_code == 401
    assert "That is not the read token." in wrong.text
    assert SESSION_COOKIE not in wrong.cookies
    right = sign_in(signed, READ_TOKEN, "/ui/quarantine")
    assert (right.status_code, right.headers["location"]) == (303, "/ui/quarantine")
    cookie = right.headers["set-cookie"]
    value = cookie.removeprefix(f"{SESSION_COOKIE}=").partition(";")[0]
    assert valid_session(value, READ_TOKEN, time.time())
    assert not valid_session(value, "another token", time.time())
    assert f"Max-Age={SESSION_SECONDS}" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert READ_TOKEN not in cookie
    assert signed.get("/", follow_redirects=False).status_code == 200
    assert signed.get("/ui/pulse").status_code == 200
    again = signed.get("/ui/login?next=/ui/documents", follow_redirects=False)
    assert again.headers["location"] == "/ui/documents"  # signed in already
    out = signed.post("/ui/logout", follow_redirects=False)
    assert out.headers["location"] == "/ui/login"
    assert signed.get("/", follow_redirects=False).status_code == 303


def test_a_session_ends_after_twelve_hours(signed: TestClient) -> None:
    stale = session_cookie(READ_TOKEN, time.time() - SESSION_SECONDS - 1)
    fresh = session_cookie(READ_TOKEN, time.time() - SESSION_SECONDS + 60)
    signed.cookies.set(SESSION_COOKIE, stale)
    assert signed.get("/", follow_redirects=False).status_code == 303
    signed.cookies.set(SESSION_COOKIE, fresh)
    assert signed.get("/", follow_redirects=False).status_code == 200
    signed.cookies.set(SESSION_COOKIE, "9999999999." + fresh.partition(".")[2])
    assert signed.get("/", follow_redirects=False).status_code == 303


def test_the_bearer_token_opens_the_dashboard_too(signed: TestClient) -> None:
    bearer = {"authorization": f"Bearer {READ_TOKEN}"}
    assert signed.get("/", headers=bearer, follow_redirects=False).status_code == 200
    wrong = {"authorization": "Bearer nope"}
    assert signed.get("/", headers=wrong, follow_redirects=False).status_code == 303


@pytest.mark.parametrize("elsewhere", ["//evil.example/x", "https://evil.example/", "/\\evil", ""])
def test_signing_in_never_redirects_off_the_site(signed: TestClient, elsewhere: str) -> None:
    response = sign_in(signed, READ_TOKEN, elsewhere)
    assert (response.status_code, response.headers["location"]) == (303, "/")


def test_without_a_read_token_there_is_no_sign_in(client: TestClient) -> None:
    response = client.get("/ui/login?next=/ui/quarantine", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/ui/quarantine")
    assert "Sign out" not in client.get("/").text


def test_the_header_box_finds_instances_and_documents(client: TestClient) -> None:
    post_flow(client, flow("custom", 1))
    client.post("/callbacks/document", content=document_form("pending", 1), headers=FORM)
    cases = {
        INSTANCE[:5].upper(): f"/ui/instances?q={INSTANCE[:5].upper()}",
        DOCUMENT[:6]: f"/ui/documents?q={DOCUMENT[:6]}",
        "nothing": "/ui/instances?q=nothing",
    }
    for query, target in cases.items():
        response = client.get(f"/ui/search?q={query}", follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, target)
    whole = client.get(f"/ui/search?q={DOCUMENT}", follow_redirects=True)
    assert whole.url.path == f"/ui/documents/{DOCUMENT}"


def test_the_overview_takes_its_pulse_before_its_data(client: TestClient) -> None:
    store = client.app.state.runtime.store
    pipeline = Pipeline(store)
    read = store.received_since

    def with_a_callback_meanwhile(minute: str) -> dict[str, int]:
        store.received_since = read  # once
        pipeline.ingest([parse_flow(flow("completed", 5), "application/json")])
        found: dict[str, int] = read(minute)
        return found

    store.received_since = with_a_callback_meanwhile
    page = Elements(client.get("/").text)
    shown = page.having("data-pulse")[0]["data-pulse"]
    assert shown != client.get("/ui/pulse?minute=1").json()["pulse"]  # it will redraw


def test_a_huge_session_cookie_is_refused_not_an_error(signed: TestClient) -> None:
    signed.cookies.set(SESSION_COOKIE, "9" * 5000 + ".x")
    assert signed.get("/", follow_redirects=False).status_code == 303
    assert signed.get("/ui/pulse").status_code == 401


def test_after_signing_in_a_deep_link_arrives_as_it_was_sent(signed: TestClient) -> None:
    response = signed.get("/ui/documents/p%2541q?x=1", follow_redirects=False)
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fdocuments%2Fp%252541q%3Fx%3D1"


@pytest.mark.parametrize("elsewhere", ["/\t/evil.example", "/ui\r\nSet-Cookie: a=b"])
def test_a_next_with_control_characters_goes_home(signed: TestClient, elsewhere: str) -> None:
    response = sign_in(signed, READ_TOKEN, elsewhere)
    assert response.headers["location"] == "/"


def test_an_oversized_sign_in_form_is_413(signed: TestClient) -> None:
    response = signed.post("/ui/login", content=b"token=" + b"x" * 20_000, headers=FORM)
    assert response.status_code == 413


def test_the_header_box_prefers_a_whole_document_id_seen_after_longer_ones(
    client: TestClient,
) -> None:
    # Lists are in first-seen order: the whole id is found by itself, not as the first row.
    for document in (b"1234", b"123"):
        form = document_form("pending", 1).replace(DOCUMENT.encode(), document)
        assert client.post("/callbacks/document", content=form, headers=FORM).status_code == 200
    post_flow(client, flow("custom", 1, instance="12300000-0000-4000-8000-000000000000"))
    response = client.get("/ui/search?q=123", follow_redirects=False)
    assert response.headers["location"] == "/ui/documents?q=123"
    response = client.get("/ui/search?q=12", follow_redirects=False)
    assert response.headers["location"] == "/ui/instances?q=12"


def test_the_header_box_prefers_a_whole_document_id(client: TestClient) -> None:
    post_flow(client, flow("custom", 1, instance="abc00000-0000-4000-8000-000000000000"))
    form = document_form("pending", 1).replace(DOCUMENT.encode(), b"abc")
    assert client.post("/callbacks/document", content=form, headers=FORM).status_code == 200
    response = client.get("/ui/search?q=abc", follow_redirects=False)
    assert response.headers["location"] == "/ui/documents?q=abc"
    response = client.get("/ui/search?q=ab", follow_redirects=False)
    assert response.headers["location"] == "/ui/instances?q=ab"
