// flowtracker dashboard: redraw <main> when the pulse this page watches changes (a
// delivery to its subject, or any callback for the lists). Polls every two seconds.
"use strict";
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
