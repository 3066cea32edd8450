// flowtracker dashboard: redraw <main> when the tracker has taken a callback since the
// page was rendered. Polls /ui/pulse (a few bytes) every two seconds; no framework.
"use strict";
(() => {
  const live = document.getElementById("live");
  if (!live) return;
  const text = live.querySelector(".live-text");
  let pulse = live.dataset.pulse;
  const PERIOD = 2000;

  function show(on, words) {
    live.classList.toggle("on", on);
    live.classList.toggle("off", !on);
    text.textContent = words;
  }

  function busy() {
    // Never redraw under someone typing in a form of the page.
    const active = document.activeElement;
    return active && active.closest("main") && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  async function redraw() {
    const response = await fetch(location.href, { credentials: "same-origin" });
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
    return true;
  }

  async function tick() {
    try {
      const response = await fetch("/ui/pulse", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) { location.reload(); return; }
      const now = (await response.json()).pulse;
      if (now !== pulse && !busy() && (await redraw())) pulse = now;
      show(true, "live · " + new Date().toLocaleTimeString());
    } catch (error) {
      show(false, "reconnecting…");
    }
    setTimeout(tick, PERIOD);
  }

  show(true, "live");
  setTimeout(tick, PERIOD);
})();
