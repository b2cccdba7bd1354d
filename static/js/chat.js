// Chat page behaviour that HTML alone cannot express: keyboard shortcuts, autoscroll,
// the address bar following a new conversation, and copy buttons on code blocks.
(function () {
  "use strict";

  function composer() { return document.getElementById("composer"); }
  function input() { return document.getElementById("composer-input"); }
  function scroller() { return document.getElementById("scroller"); }

  function nearBottom() {
    var s = scroller();
    return !s || s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }
  function toBottom() { var s = scroller(); if (s) s.scrollTop = s.scrollHeight; }

  function autosize() {
    var t = input();
    if (!t) return;
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight, 240) + "px";
  }

  function send() {
    var t = input();
    if (!t || !t.value.trim()) return;
    htmx.trigger(composer(), "submit");
  }

  document.addEventListener("keydown", function (e) {
    if (e.target === input() && e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape") {
      var stops = document.querySelectorAll(".stop-btn");
      if (stops.length) { e.preventDefault(); stops[stops.length - 1].click(); }
    }
  });

  document.addEventListener("input", function (e) { if (e.target === input()) autosize(); });

  // The ws extension serialises the form on submit; clear the box once the frame is sent.
  document.addEventListener("htmx:wsAfterSend", function (e) {
    if (e.target === composer()) { input().value = ""; autosize(); toBottom(); }
  });

  var follow = true;
  document.addEventListener("htmx:wsBeforeMessage", function () { follow = nearBottom(); });
  document.addEventListener("htmx:wsAfterMessage", function () {
    if (follow) toBottom();
    var id = document.getElementById("composer-conversation-id");
    if (id && id.value && location.pathname === "/") {
      history.replaceState(null, "", "/c/" + id.value + "/");
    }
    decorate(document);
  });

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
    root.querySelectorAll(".answer pre").forEach(function (pre) {
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
  });

  document.addEventListener("htmx:load", function (e) { decorate(e.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { decorate(document); toBottom(); autosize(); });
})();
