// prism-sync ui: a little JavaScript on top of pages that work without it.
"use strict";

// Live regions: an element with data-refresh="URL" reloads its HTML from URL every few seconds
// while the page is visible (the dashboard's sets).
const REFRESH_MS = 2000;
for (const el of document.querySelectorAll("[data-refresh]")) {
  let busy = false;
  setInterval(async () => {
    if (document.hidden || busy) return;
    busy = true;
    try {
      const r = await fetch(el.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
      if (r.ok) {
        const html = await r.text();
        if (html !== el.innerHTML) el.innerHTML = html;
        el.dataset.refreshed = String(Date.now());
      }
    } catch (_) {
      // The app stopped or the network blinked: try again next time.
    } finally {
      busy = false;
    }
  }, REFRESH_MS);
}

// Timelines: the label under a slider names the version it points at.
for (const range of document.querySelectorAll("input[type=range][data-times]")) {
  const out = document.getElementById(range.dataset.output);
  const times = JSON.parse(range.dataset.times);
  const show = () => { if (out) out.textContent = times[Number(range.value)] || ""; };
  range.addEventListener("input", show);
  show();
}
