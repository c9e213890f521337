// The command page while its command runs: polls /ui/commands/ID/live once a second and shows the output so far
// (textContent only: command output is untrusted), then reloads the page once the command has ended, so the exit
// code, duration and reason come from the server-rendered page.
(function () {
  "use strict";
  const root = document.getElementById("command");
  if (!root || root.dataset.ended === "true") return;
  const output = document.getElementById("command-output");
  const status = document.getElementById("command-status");
  const live = document.getElementById("command-live");
  const empty = document.getElementById("command-no-output");
  const url = root.dataset.live;
  let delay = 1000;

  function tell(text) {
    if (live) live.textContent = text;
  }

  async function poll() {
    let body;
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 404 || response.status === 401 || response.redirected) {
        window.location.reload(); // no longer readable, or signed out: the server says why
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      body = await response.json();
    } catch (err) {
      delay = Math.min(delay * 2, 10000);
      tell("lost contact with the server (" + err.message + "); retrying in " + Math.round(delay / 1000) + " s");
      window.setTimeout(poll, delay);
      return;
    }
    delay = 1000;
    if (output.textContent !== body.output) {
      const atEnd = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
      output.textContent = body.output;
      if (atEnd) output.scrollTop = output.scrollHeight;
      if (empty && body.output) empty.hidden = true;
    }
    status.textContent = body.status;
    if (body.ended) {
      tell("ended");
      window.location.reload();
      return;
    }
    tell(body.status === "running" ? "running — the output below follows it" : "not sent yet");
    window.setTimeout(poll, delay);
  }

  window.setTimeout(poll, delay);
})();
