// flowtracker dashboard: redraw <main> when the pulse this page watches changes (a
// delivery to its subject, or any callback for the lists). Polls every two seconds.
"use strict";
// The time axis of the overview's chart: each mark where its minute is (the policy of the
// page allows no inline style, so the positions are set here), again after each redraw.
function placeTicks() {
  for (const mark of document.querySelectorAll(".x-axis [data-at]")) {
    mark.style.left = mark.dataset.at + "%";
  }
}
placeTicks();

(() => {
  const live = document.getElementById("live");
  if (!live) return;
  const text = live.querySelector(".live-text");
  const url = live.dataset.pulseUrl;
  let pulse = live.dataset.pulse;
  const PERIOD = 2000;

  function show(on, words) {
    live.classList.toggle("on", on);
    live.classList.toggle("off", !on);
    text.textContent = words;
  }

  function busy() {
    // Never redraw under someone typing in a form of the page or selecting its text.
    const active = document.activeElement;
    const typing = active && active.closest("main") && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
    const selection = window.getSelection();
    return typing || (selection && !selection.isCollapsed);
  }

  async function redraw() {
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (response.redirected) { location.reload(); return false; } // signed out meanwhile
    if (!response.ok) return false;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const main = fresh.getElementById("main");
    if (!main) return false;
    const open = [...document.querySelectorAll("main details[open][id]")].map((d) => d.id);
    document.getElementById("main").replaceWith(main);
    placeTicks();
    for (const id of open) {
      const details = document.getElementById(id);
      if (details) details.open = true;
    }
    document.title = fresh.title;
    // The page's own pulse: read before its data, so never newer than what it shows.
    const live = fresh.getElementById("live");
    return (live && live.dataset.pulse) || true;
  }

  async function tick() {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) { location.reload(); return; }
      if (!response.ok) throw new Error("pulse answered " + response.status);
      const now = (await response.json()).pulse;
      if (now !== pulse && !busy()) {
        const drawn = await redraw();
        if (drawn) pulse = drawn === true ? now : drawn;
      }
      show(true, "live · " + new Date().toLocaleTimeString());
    } catch (error) {
      show(false, "reconnecting…");
    }
    setTimeout(tick, PERIOD);
  }

  show(true, "live");
  setTimeout(tick, PERIOD);
})();

// The Changes page: new changes from /ui/feed (Server-Sent Events) on top of the table.
(() => {
  const table = document.getElementById("live-changes");
  const state = document.getElementById("feed-state");
  if (!table || !state || !window.EventSource) return;
  const body = table.querySelector("tbody");
  const source = new EventSource(`/ui/feed?after=${encodeURIComponent(state.dataset.after)}`);
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting"; };
  source.addEventListener("change", (message) => {
    const c = JSON.parse(message.data);
    const row = document.createElement("tr");
    const page = c.kind === "flow" ? "instances" : "documents";
    const cells = [String(c.seq), c.kind, null, c.previous || "", c.state,
      `${c.event.type || c.event.status} · ${c.source}`, c.at];
    for (const text of cells) {
      const cell = document.createElement("td");
      if (text === null) {
        const link = document.createElement("a");
        link.href = `/ui/${page}/${encodeURIComponent(c.subject)}`;
        link.textContent = c.subject;
        cell.append(link);
      } else {
        cell.textContent = text;
      }
      row.append(cell);
    }
    body.querySelector("tr.empty")?.remove();
    body.prepend(row);
    while (body.rows.length > 200) body.deleteRow(-1);
  });
})();
