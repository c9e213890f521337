// The incident list's live rows. Every few seconds it asks /ui/incidents/rows (the same filters) with the last
// ETag; when the counts or rows changed the server sends them (else 304) and they are swapped in, keeping the
// ticked boxes and the focus. The fragment is HTML the server rendered with autoescaping; it is parsed with
// DOMParser and its nodes moved in (the page's CSP runs no inline script). When the controller is down or
// restarting it keeps asking, more slowly, and says so; when the session has ended it stops and says so.
// Without this script the page is a plain page: filters and bulk actions are ordinary forms.
(function () {
  "use strict";
  const region = document.getElementById("live-list");
  if (!region) return;
  const state = document.getElementById("live-state");
  const pickAll = document.getElementById("pick-all");
  const pickAllLabel = document.getElementById("pick-all-label");
  const url = region.dataset.rowsUrl;
  const every = Number(region.dataset.pollMs) || 2500;
  const slowest = 10000; // the longest wait between two tries while the controller is away
  let etag = region.dataset.etag || null;
  let failures = 0;
  let timer = null;
  let ended = false;
  let busy = false;

  function say(text, live) {
    if (region.dataset.live !== live || state.textContent !== text) {
      state.textContent = text;
      region.dataset.live = live;
    }
  }

  function boxes() {
    return Array.from(region.querySelectorAll('input[name="incident"]'));
  }

  function syncPickAll() {
    const all = boxes();
    pickAll.checked = all.length > 0 && all.every((box) => box.checked);
    pickAll.disabled = all.length === 0;
  }

  function swap(html) {
    const ticked = new Set(boxes().filter((box) => box.checked).map((box) => box.value));
    const active = document.activeElement;
    const focused = active && region.contains(active) && active.id ? active.id : null;
    const parsed = new DOMParser().parseFromString(html, "text/html");
    region.replaceChildren(...Array.from(parsed.body.childNodes, (node) => document.adoptNode(node)));
    boxes().forEach((box) => {
      box.checked = ticked.has(box.value);
    });
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
    syncPickAll();
  }

  function schedule() {
    if (ended || timer !== null || document.hidden) return;
    const delay = failures === 0 ? every : Math.min(every * 2 ** failures, slowest);
    timer = window.setTimeout(poll, delay);
  }

  function failed(why) {
    failures += 1;
    const seconds = Math.round(Math.min(every * 2 ** failures, slowest) / 1000);
    say("Live updates paused: " + why + ". Trying again every " + seconds + " s; the list may be out of date.", "retrying");
  }

  async function poll() {
    timer = null;
    if (ended || busy || document.hidden) return;
    busy = true;
    const headers = { Accept: "text/html" };
    if (etag) headers["If-None-Match"] = etag;
    try {
      const response = await fetch(url, { headers, credentials: "same-origin", cache: "no-store", redirect: "manual" });
      if (response.type === "opaqueredirect" || response.status === 401 || response.status === 403) {
        ended = true;
        say("Live updates stopped: your session has ended. Reload the page to sign in again.", "ended");
        return;
      }
      if (response.status === 304 || response.ok) {
        if (response.ok) {
          const html = await response.text();
          etag = response.headers.get("ETag");
          swap(html);
        }
        failures = 0;
        say("Live: new and changed incidents appear here by themselves.", "ok");
      } else {
        failed("TeleOps answered " + response.status);
      }
    } catch (error) {
      failed("TeleOps cannot be reached");
    } finally {
      busy = false;
    }
    schedule();
  }

  pickAllLabel.hidden = false;
  pickAll.addEventListener("change", () => {
    boxes().forEach((box) => {
      box.checked = pickAll.checked;
    });
  });
  region.addEventListener("change", (event) => {
    if (event.target.name === "incident") syncPickAll();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null && !busy) poll();
  });
  syncPickAll();
  say("Live: new and changed incidents appear here by themselves.", "ok");
  schedule();
})();
