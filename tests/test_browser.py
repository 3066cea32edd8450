"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real
server on loopback. Screenshots of every page go to tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import DOCUMENT, INSTANCE, document_form, flow
from tests.server import Server, serving

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# No sandbox (CI runs as root) and none of chromium's own network traffic.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MiB
]
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
WAIT_MS = 20_000  # for the page to notice a callback; it polls every 2 s

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (scripts/test installs it when it can)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A tab; the test fails on any script error or console error it shows."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "401" not in message.text
            else None
        ),
    )
    yield tab
    context.close()
    assert problems == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("browser") / "ui.db") as running:
        for body in (
            flow("authentication_attempted", 1),
            flow("completed", 9),
            flow("custom", 4),  # late
            flow("completed", 9),  # duplicate
            flow("cancelled", 12),  # illegal
            flow("custom", 2, instance="00000000-0000-4000-8000-00000000000b"),
        ):
            assert post(running, "/callbacks/flow", body).status_code == 200
        for status, version in (("preparation", 1), ("pending", 2), ("closed", 3)):
            answer = post(running, "/callbacks/document", document_form(status, version, version))
            assert answer.status_code == 200
        post(running, "/callbacks/flow", b'{"type": "completed", "<b>": "</pre><script>x</script>')
        yield running


def post(server: Server, path: str, body: bytes) -> httpx.Response:
    headers = FORM if path.endswith("document") else JSON
    return httpx.post(server.url + path, content=body, headers=headers)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_overview_shows_the_counts(server: Server, page: Any) -> None:
    page.goto(server.url + "/")
    assert page.title() == "Overview · flowtracker"
    assert page.locator('#instance-states [data-count="completed"]').inner_text() == "1"
    assert page.locator('#instance-states [data-count="in_progress"]').inner_text() == "1"
    assert page.locator('#callbacks [data-count="illegal"]').inner_text() == "1"
    assert page.locator('#callbacks [data-count="quarantined"]').inner_text() == "1"
    assert page.locator("#throughput polyline").count() == 1
    shot(page, "overview")


def test_search_open_an_instance_and_read_its_diagram_and_timeline(
    server: Server, page: Any
) -> None:
    page.goto(server.url + "/")
    page.fill("header input[name=q]", INSTANCE[:6])
    page.press("header input[name=q]", "Enter")
    page.wait_for_url("**/ui/instances?q=*")
    shot(page, "instances")
    page.click(f"a[title='{INSTANCE}']")
    page.wait_for_url(f"**/ui/instances/{INSTANCE}")
    current = page.locator("svg.diagram .node.current")
    assert current.count() == 1
    assert current.get_attribute("data-state") == "completed"
    api = httpx.get(f"{server.url}/instances/{INSTANCE}").json()
    shown = page.locator("#timeline li.event").evaluate_all(
        "items => items.map(i => [i.dataset.type, i.dataset.outcome])"
    )
    assert shown == [[e["type"], e["outcome"]] for e in api["events"]]
    assert shown == [
        ["authentication_attempted", "applied"],
        ["custom", "applied"],
        ["completed", "applied"],
        ["cancelled", "illegal"],
    ]
    assert page.locator("#timeline li.late").count() == 1
    page.locator("#timeline li.event summary").first.click()
    assert '"type": "authentication_attempted"' in page.locator("#timeline pre").first.inner_text()
    shot(page, "instance")


def test_a_new_callback_appears_without_a_reload(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui/instances/{INSTANCE}")
    completed = page.locator("#timeline li.event[data-type=completed]")
    completed.locator("summary").click()  # an open payload stays open, on its own event
    page.evaluate("window.notReloaded = true")
    before = page.locator("#timeline li.event").count()
    # earlier than every event shown: it lands at the top of the timeline
    assert post(server, "/callbacks/flow", flow("authentication_attempted", 0)).status_code == 200
    # Locators, not wait_for_function: the page's CSP forbids evaluating strings in it.
    page.locator("#timeline li.event").nth(before).wait_for(timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True
    opened = page.locator("#timeline li.event:has(details[open])")
    assert opened.evaluate_all("items => items.map(i => i.dataset.type)") == ["completed"]
    assert page.locator("#live.on").count() == 1
    page.goto(server.url + "/")
    old = int(page.locator('#callbacks [data-count="applied"]').inner_text())
    assert post(
        server,
        "/callbacks/flow",
        flow("custom", 20, instance="00000000-0000-4000-8000-00000000000c"),
    ).is_success
    applied = page.locator('#callbacks [data-count="applied"]')
    playwright.expect(applied).to_have_text(str(old + 1), timeout=WAIT_MS)


def test_the_document_and_quarantine_pages(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui/documents")
    shot(page, "documents")
    page.click(f"a[title='{DOCUMENT}']")
    page.wait_for_url(f"**/ui/documents/{DOCUMENT}")
    assert page.locator("svg.diagram .node.current").get_attribute("data-state") == "closed"
    shot(page, "document")
    page.goto(f"{server.url}/ui/quarantine")
    page.locator(".quarantine summary").first.click()
    assert "<script>x</script>" in page.locator(".quarantine pre").last.inner_text()
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    shot(page, "quarantine")


def test_signing_in_with_the_read_token(browser: Any, tmp_path: Path, page: Any) -> None:
    env = {"FLOWTRACKER_READ_TOKEN": "browser-secret"}
    with serving(tmp_path / "signed.db", env=env) as signed:
        page.goto(signed.url + "/ui/quarantine")
        page.wait_for_url("**/ui/login?next=*")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").inner_text() == "That is not the read token."
        shot(page, "login")
        page.fill("#token", "browser-secret")
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/quarantine")
        assert page.locator("h1").inner_text().startswith("Quarantine")
        page.click("text=Sign out")
        page.wait_for_url("**/ui/login")


def test_the_overview_chart_has_axes_and_totals(server: Server, page: Any) -> None:
    page.goto(server.url + "/")
    marks = page.locator(".x-axis span")
    assert 3 <= marks.count() <= 5
    # Placed by the page's script along the axis: the first left of the last.
    lefts = [marks.nth(n).bounding_box()["x"] for n in range(marks.count())]
    assert lefts == sorted(lefts) and lefts[-1] - lefts[0] > 300
    assert page.locator(".y-axis span").first.inner_text() != ""
    states = page.locator("#instance-states [data-count]")
    shown = sum(int(states.nth(n).inner_text()) for n in range(states.count()))
    assert int(page.locator("#instances-total").inner_text()) == shown >= 2
    assert "days quiet" in page.locator("#instance-states").inner_text()
    shot(page, "overview-axes")


def test_a_list_sorted_by_last_activity_downloads_as_csv(server: Server, page: Any) -> None:
    page.goto(server.url + "/ui/instances")
    page.select_option("select[name=sort]", "last_activity")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**sort=last_activity**")
    with page.expect_download() as downloading:
        page.click("#csv")
    rows = Path(downloading.value.path()).read_text().splitlines()
    assert rows[0].startswith("id,state,terminal")
    listed = page.locator("table.list tbody tr")
    assert len(rows) == 1 + listed.count() >= 3  # every instance, the last received first
    assert rows[1].split(",")[0] in listed.first.inner_text()
    shot(page, "instances-by-activity")


def test_retry_and_delete_on_the_quarantine_page(tmp_path: Path, page: Any) -> None:
    env = {"FLOWTRACKER_ADMIN_TOKEN": "admin-secret"}
    with serving(tmp_path / "admin.db", env=env) as admin:
        post(admin, "/callbacks/flow", b"{not json")
        page.goto(admin.url + "/ui/quarantine")
        assert page.locator("button.retry").count() == 0  # not signed in as admin yet
        page.fill("#admin-token", "admin-secret")
        page.click("text=Sign in as admin")
        page.wait_for_url("**/ui/quarantine")
        page.click("button.retry")
        page.wait_for_url("**/ui/quarantine?done=*")
        assert "0 accepted and stored" in page.locator("#done").inner_text()
        assert "still refused: invalid_json" in page.locator("#done").inner_text()
        shot(page, "quarantine-admin")
        page.click("button.delete")
        page.wait_for_url("**/ui/quarantine?done=*")
        assert page.locator("#done").inner_text() == "deleted 1 quarantined request"
        assert page.locator(".quarantine li").count() == 0
