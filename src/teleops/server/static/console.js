// The console chat: one WebSocket to /ui/console/ws. Every piece of text is set with textContent,
// never innerHTML: alert text and command output are untrusted.
(function () {
  "use strict";
  const root = document.getElementById("console");
  const list = document.getElementById("messages");
  const state = document.getElementById("console-state");
  const notice = document.getElementById("notice");
  const form = document.getElementById("composer");
  const input = document.getElementById("text");
  const replying = document.getElementById("replying");
  const replyingId = document.getElementById("replying-id");
  const replyingLink = document.getElementById("replying-link");
  const replyingWhat = document.getElementById("replying-what");
  let socket = null;
  let replyTo = null;
  let retryDelay = 500;
  let stopped = false;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function severityOf(text) {
    // The first line of a rendered alert is "<mark> SEVERITY · title" (chat/render.py).
    const match = /^\S+\s+(CRITICAL|ERROR|WARNING|INFO)\b/.exec(text.split("\n", 1)[0] || "");
    return match ? match[1].toLowerCase() : null;
  }

  // What a reply does, by the message's `reply` (chat/console/gateway.py reply_meaning); "reply" is offered only
  // on messages where it does something.
  function replyEffect(message) {
    if (message.reply === "code") return "your reply is taken as the one-time code, never run as a command.";
    return "the command runs on the host of incident #" + message.incident_id + ".";
  }

  function setReply(message) {
    replyTo = message === null ? null : message.id;
    replying.hidden = message === null;
    if (message !== null) {
      replyingId.textContent = String(message.id);
      replyingLink.href = "#m" + message.id;
      replyingWhat.textContent = replyEffect(message);
      input.focus();
    }
  }

  function render(message) {
    const item = el("li", "message");
    item.id = "m" + message.id;
    item.dataset.id = String(message.id);
    if (message.author) {
      item.classList.add("mine");
    } else {
      item.classList.add("bot");
      const sev = severityOf(message.text || "");
      if (sev) item.classList.add("sev-" + sev);
    }
    const head = el("div", "message-head");
    head.appendChild(el("span", "author", message.author || "TeleOps"));
    const when = new Date(message.at + (message.at.endsWith("Z") || message.at.includes("+") ? "" : "Z"));
    const time = el("time", null, when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = message.at;
    head.appendChild(time);
    if (message.edited) head.appendChild(el("span", "edited", "edited"));
    head.appendChild(el("span", "msg-id", "#" + message.id));
    item.appendChild(head);
    if (message.reply_to !== null && message.reply_to !== undefined) {
      const ref = el("a", "reply-ref", "↪ #" + message.reply_to);
      ref.href = "#m" + message.reply_to;
      item.appendChild(ref);
    }
    if (message.withheld) {
      // The read rule: a command this person may not read keeps its place, with one line and the reason on hover.
      item.classList.add("withheld");
      const line = el("div", "text", message.text);
      line.title = message.withheld;
      item.appendChild(line);
    } else if (message.text) {
      const text = el("div", "text", message.text);
      // Quotes of earlier commands this person may not read are replaced in the text; the reason is on hover.
      if (message.quotes_withheld) text.title = message.quotes_withheld;
      item.appendChild(text);
    }
    if (message.file) {
      const box = el("details", "file");
      const size = Number(message.file.bytes).toLocaleString("en-US");
      box.appendChild(el("summary", null, "📎 " + message.file.name + " (" + size + " bytes)"));
      box.appendChild(el("pre", "output", message.file.text));
      const save = el("a", "download", "download");
      save.download = message.file.name;
      save.href = URL.createObjectURL(new Blob([message.file.text], { type: "text/plain" }));
      box.appendChild(save);
      item.appendChild(box);
    }
    const actions = el("div", "message-actions");
    for (const button of message.buttons || []) {
      const b = el("button", "chat-button", button.label);
      b.type = "button";
      b.addEventListener("click", function () {
        send({ type: "button", message_id: message.id, data: button.data });
      });
      actions.appendChild(b);
    }
    if (!message.author && message.reply) {
      const reply = el("button", "link reply", "reply");
      reply.type = "button";
      reply.addEventListener("click", function () { setReply(message); });
      actions.appendChild(reply);
    }
    item.appendChild(actions);
    return item;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function show(message, isEdit) {
    const follow = nearBottom();
    const node = render(message);
    const existing = document.getElementById("m" + message.id);
    if (existing) existing.replaceWith(node);
    else if (!isEdit) list.appendChild(node);
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  }

  function flash(text) {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(function () { notice.hidden = true; }, 8000);
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      flash("Not connected; wait a moment and try again.");
      return false;
    }
    socket.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ui/console/ws");
    socket.addEventListener("open", function () { retryDelay = 500; });
    socket.addEventListener("message", function (event) {
      const frame = JSON.parse(event.data);
      if (frame.type === "history") {
        list.replaceChildren();
        for (const message of frame.messages) list.appendChild(render(message));
        state.textContent = "Connected as " + frame.user + ". Reply to an alert to run a command on its host.";
        root.dataset.connected = "true";
        window.scrollTo(0, document.body.scrollHeight);
      } else if (frame.type === "message") {
        show(frame.message, false);
      } else if (frame.type === "edit") {
        show(frame.message, true);
      } else if (frame.type === "notice") {
        flash(frame.text);
      }
    });
    socket.addEventListener("close", function (event) {
      root.dataset.connected = "false";
      if (event.code === 1008 || event.code === 4401) {
        stopped = true;
        state.replaceChildren(el("span", null, "Your session ended. "));
        const again = el("a", null, "Log in again");
        again.href = "/ui/login?next=/ui/console";
        state.appendChild(again);
        return;
      }
      if (stopped) return;
      state.textContent = "Disconnected; reconnecting…";
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (send({ type: "text", text: text, reply_to: replyTo })) {
      input.value = "";
      setReply(null);
    }
  });
  document.getElementById("replying-cancel").addEventListener("click", function () { setReply(null); });
  connect();
})();
