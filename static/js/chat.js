// Chat page behaviour that HTML alone cannot express: sending only what the server can take
// (and never losing what was typed), following the stream, the connection and model states,
// rendering answers as they stream, the title and address following the conversation,
// keyboard shortcuts and copy buttons.
(function () {
  "use strict";

  var READY_POLL_MS = 3000;
  var NEAR_BOTTOM_PX = 40;
  var TITLE_SUFFIX = " · Liminal";
  // The ws extension reconnects after these closes by itself; after any other (a proxy, a
  // server going away cleanly, the socket closed from the page) this script does, with the
  // same backoff.
  var RETRIED_BY_EXTENSION = [1006, 1011, 1012, 1013];
  var CLOSE_UNAUTHENTICATED = 4401;
  var GENERATING_NOTE = "Send is off until the answer is written (Esc stops it). What you type stays here.";

  function byId(id) { return document.getElementById(id); }
  function composer() { return byId("composer"); }
  function input() { return byId("composer-input"); }
  function scroller() { return byId("scroller"); }
  function conversationId() { var field = byId("composer-conversation-id"); return field ? field.value : ""; }

  // Full jitter under an exponential ceiling: 1 s, 2 s, 4 s ... 32 s.
  function reconnectDelay(attempt) {
    var ceiling = 1000 * Math.pow(2, Math.min(attempt, 5));
    return ceiling * (0.5 + Math.random() / 2);
  }

  var state = {
    connection: "connecting",  // connecting | open | lost | signed-out
    opened: false,
    retries: 0,
    leaving: false,
    sent: null,                // the composer's text sent and not yet confirmed or refused
    stuck: true,               // the view follows new content while the user has not scrolled up
  };
  var chat = window.liminalChat = { socket: null, reconnectDelay: reconnectDelay };

  if (window.htmx) {
    htmx.config.wsReconnectDelay = reconnectDelay;
    var createSocket = htmx.createWebSocket;
    // The socket names the conversation shown now, so that after a reconnect the server
    // streams its unfinished answer again, even for a chat started on this page.
    htmx.createWebSocket = function (url) {
      var id = conversationId();
      if (id) url = url.split("?")[0] + "?conversation=" + encodeURIComponent(id);
      chat.socket = createSocket(url);
      return chat.socket;
    };
  }

  // ---- composer: Send only when the server can take a message; the text stays until it has

  function pendingAnswers() {
    return document.querySelectorAll('#messages .msg.assistant[data-status="queued"], #messages .msg.assistant[data-status="streaming"]');
  }

  function blockedBy() {
    if (state.connection === "lost" || state.connection === "signed-out") return "connection";
    if (pendingAnswers().length) return "generating";
    if (state.sent !== null) return "sending";
    return null;
  }

  function refresh() {
    var send = byId("composer-send"), note = byId("composer-status"), line = byId("connection-status");
    if (!send) return;
    var reason = blockedBy();
    send.disabled = reason !== null;
    note.textContent = reason === "generating" ? GENERATING_NOTE : "";
    note.hidden = !note.textContent;
    line.textContent = state.connection === "lost"
      ? "Reconnecting… What you type stays here and can be sent once the connection is back."
      : state.connection === "signed-out" ? "You have been signed out. Reload the page to sign in again." : "";
    line.hidden = !line.textContent;
    byId("chat").dataset.connection = state.connection;
  }

  function attention() {
    var note = byId("composer-status");
    note.classList.remove("attention");
    void note.offsetWidth;  // restart the animation
    note.classList.add("attention");
  }

  function autosize() {
    var t = input();
    if (!t) return;
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight, 240) + "px";
  }

  function clearNotices() { var n = byId("notices"); if (n) n.innerHTML = ""; }

  // Every way of sending (Enter, the button, htmx.trigger) is a submit event on the composer;
  // stopping it here, before htmx sees it, keeps the text in the box.
  document.addEventListener("submit", function (e) {
    if (e.target !== composer()) return;
    var blocked = blockedBy();
    if (blocked || !input().value.trim()) {
      e.preventDefault();
      e.stopImmediatePropagation();
      if (blocked) { refresh(); attention(); }
    }
  }, true);

  document.addEventListener("htmx:wsAfterSend", function (e) {
    if (e.target !== composer()) return;
    state.sent = input().value;
    state.stuck = true;
    refresh();
  });

  document.addEventListener("keydown", function (e) {
    if (e.target === input() && e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (input().value.trim()) htmx.trigger(composer(), "submit");
    } else if (e.key === "Escape") {
      var stops = document.querySelectorAll(".stop-btn");
      if (stops.length) { e.preventDefault(); stops[stops.length - 1].click(); }
    }
  });

  document.addEventListener("input", function (e) { if (e.target === input()) autosize(); });

  // ---- answers render as they stream

  var rendered = new WeakMap();

  function renderStreams() {
    document.querySelectorAll(".body.streaming").forEach(function (body) {
      var source = body.querySelector(".stream-source"), view = body.querySelector(".stream-view");
      if (!source || !view || !window.liminalMarkdown) return;
      var text = source.textContent;
      if (rendered.get(view) === text) return;
      rendered.set(view, text);
      view.innerHTML = window.liminalMarkdown.render(text);
    });
  }

  // ---- following the stream

  function distanceFromBottom() { var s = scroller(); return s.scrollHeight - s.scrollTop - s.clientHeight; }

  function toBottom() {
    var s = scroller();
    if (!s) return;
    s.scrollTop = s.scrollHeight;
    state.stuck = true;
    byId("jump-latest").hidden = true;
  }

  function follow() {
    if (state.stuck) toBottom();
    else byId("jump-latest").hidden = false;
  }

  // ---- messages from the server

  document.addEventListener("htmx:wsAfterMessage", function (e) {
    var message = e.detail.message || "";
    if (message.indexOf('id="messages" hx-swap-oob="beforeend"') !== -1) {
      // The server took the message: the box empties unless the user typed something else since.
      if (state.sent !== null && input().value === state.sent) { input().value = ""; autosize(); }
      state.sent = null;
      state.stuck = true;
      clearNotices();
      byId("attach-status").textContent = "";
    } else if (message.indexOf('id="messages" hx-swap-oob="true"') !== -1) {
      clearNotices();  // a regenerate or an edit started
    } else if (message.indexOf('id="notices"') !== -1) {
      state.sent = null;  // refused: what was typed stays in the box
    }
    renderStreams();
    follow();
    followConversation();
    decorate(document);
    refresh();
  });

  // A chat started on this page (by a message or an attached file) gets its own address and title.
  function followConversation() {
    var id = conversationId();
    if (id && location.pathname === "/") history.replaceState(null, "", "/c/" + id + "/");
    syncTitle();
  }

  // ---- the connection

  document.addEventListener("htmx:wsOpen", function () {
    var reopened = state.opened;
    state.opened = true;
    state.connection = "open";
    state.retries = 0;
    refresh();
    if (reopened) catchUp();
  });

  document.addEventListener("htmx:wsClose", function (e) {
    if (state.leaving) return;
    var code = e.detail.event ? e.detail.event.code : 0;
    state.sent = null;
    if (code === CLOSE_UNAUTHENTICATED) {
      state.connection = "signed-out";
    } else {
      state.connection = "lost";
      if (RETRIED_BY_EXTENSION.indexOf(code) === -1) {
        var wrapper = e.detail.socketWrapper;
        setTimeout(function () { wrapper.reconnect(); }, reconnectDelay(state.retries++));
      }
    }
    refresh();
  });

  window.addEventListener("pagehide", function () { state.leaving = true; });

  // Tokens sent while the socket was down are gone: reload each unfinished answer as stored
  // (its text so far), then the stream goes on from there.
  function catchUp() {
    var template = byId("chat").dataset.messageUrl;
    pendingAnswers().forEach(function (article) {
      var id = article.id.replace(/^msg-/, "");
      htmx.ajax("GET", template.replace("00000000-0000-0000-0000-000000000000", id), { target: "#" + article.id, swap: "outerHTML" });
    });
  }

  // ---- is the model ready?

  function pollReadiness() {
    var url = byId("chat").dataset.readyUrl;
    fetch(url, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.ok) { showModelState(""); return; }
        return response.json().catch(function () { return {}; }).then(function (body) {
          showModelState(notReadyText(body));
          setTimeout(pollReadiness, READY_POLL_MS);
        });
      }, function () { setTimeout(pollReadiness, READY_POLL_MS); });
  }

  function notReadyText(body) {
    var checks = ((body.error || {}).details || {}).checks || {};
    var down = Object.keys(checks).filter(function (name) { return checks[name] !== "ok"; });
    if (down.length) return "The service is not ready: " + down.join(" and ") + " unreachable. Retrying…";
    return "The model is loading…";
  }

  function showModelState(text) {
    var line = byId("model-status");
    line.textContent = text;
    line.hidden = !text;
    byId("chat").classList.toggle("model-loading", !!text);
  }

  // ---- title

  function syncTitle() {
    var id = conversationId(), span = id && byId("conv-title-" + id);
    if (span && span.textContent.trim()) document.title = span.textContent.trim() + TITLE_SUFFIX;
  }

  document.addEventListener("htmx:afterSettle", followConversation);

  // ---- attaching a file

  function attachForm(e) { var form = byId("attach-form"); return form && e.detail.elt === form ? form : null; }

  document.addEventListener("htmx:beforeRequest", function (e) {
    var form = attachForm(e), file = form && form.querySelector("input[type=file]").files[0];
    if (file) byId("attach-status").textContent = "Uploading “" + file.name + "”…";
  });

  // A refused file comes back as a notice saying why: show it (the response only swaps out of band).
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (attachForm(e) && e.detail.xhr.status >= 400 && e.detail.xhr.status < 500) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    var form = attachForm(e);
    if (!form) return;
    if (!succeeded(e)) byId("attach-status").textContent = "";
    form.reset();  // choosing the same file again attaches it again
  });

  // (A refused file's notice is swapped in as if it were a success: the status tells.)
  function succeeded(e) { return e.detail.successful && e.detail.xhr && e.detail.xhr.status < 400; }

  // A successful action clears the notices of failed ones.
  document.addEventListener("htmx:afterRequest", function (e) {
    var verb = (e.detail.requestConfig || {}).verb;
    if (succeeded(e) && verb && verb !== "get") clearNotices();
  });

  // ---- copy buttons

  function copy(text, button) {
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      document.execCommand("copy"); area.remove(); done();
    }
  }

  function decorate(root) {
    root.querySelectorAll(".answer:not(.streaming) pre").forEach(function (pre) {
      if (pre.dataset.copyable) return;
      pre.dataset.copyable = "1";
      var b = document.createElement("button");
      b.type = "button"; b.className = "copy-code"; b.textContent = "Copy";
      b.addEventListener("click", function () { copy(pre.innerText, b); });
      pre.parentNode.insertBefore(b, pre);
    });
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest(".copy-answer");
    if (b) copy(b.dataset.copy, b);
    if (e.target.closest("#jump-latest")) toBottom();
  });

  document.addEventListener("htmx:load", function (e) { decorate(e.detail.elt); });

  document.addEventListener("DOMContentLoaded", function () {
    var s = scroller();
    if (!s) return;
    s.addEventListener("scroll", function () {
      state.stuck = distanceFromBottom() <= NEAR_BOTTOM_PX;
      byId("jump-latest").hidden = state.stuck;
    }, { passive: true });
    // Anything that adds or finishes an answer (a swap from the socket, a catch-up after a
    // reconnect, a branch switch) may change what Send can do, what streams need drawing and,
    // while the user has not scrolled up, where the bottom is.
    new MutationObserver(function () {
      renderStreams();
      refresh();
      if (state.stuck) toBottom();
    }).observe(s, { childList: true, subtree: true });
    // Notes appearing above the composer make the list shorter: the bottom stays in view.
    if (window.ResizeObserver) new ResizeObserver(function () { if (state.stuck) toBottom(); }).observe(s);
    renderStreams();
    decorate(document);
    toBottom();
    autosize();
    refresh();
    pollReadiness();
  });
})();
