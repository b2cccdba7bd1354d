// Markdown for an answer while it streams; the server renders the finished answer
// (apps/conversations/rendering.py: Python-Markdown with tables, fenced code and line breaks,
// then an allow-list sanitiser). Here: marked (GitHub-flavoured, line breaks as <br>), then
// DOMPurify with the server's allow-list, so a table or a nested list looks the same while it
// streams as when it is done. The model's text is untrusted: raw HTML in it is shown as text
// (as the server does), and whatever marked makes is sanitised before it reaches the page.
// An unfinished code fence runs to the end of the text, so code looks like code as it comes.
(function () {
  "use strict";

  // The same tags and attributes as apps/conversations/rendering.py allows.
  var ALLOWED_TAGS = ["p", "br", "hr", "strong", "em", "b", "i", "code", "pre", "span", "div", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
    "del", "sup", "sub"];
  var ALLOWED_ATTR = ["href", "title", "class", "align"];
  var SAFE_URL = /^(?:https?:|mailto:)/i;

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  var parser = new window.marked.Marked({
    gfm: true,
    breaks: true,
    renderer: {
      // Raw HTML in the model's text (a block or an inline tag) is text, never markup.
      html: function (token) { return escapeHtml(token.text); }
    }
  });

  var purifier = window.DOMPurify;
  purifier.addHook("afterSanitizeAttributes", function (node) {
    if (node.tagName === "A") {
      if (!SAFE_URL.test(node.getAttribute("href") || "")) node.removeAttribute("href");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });

  function render(text) {
    var html = parser.parse(String(text), { async: false });
    return purifier.sanitize(html, { ALLOWED_TAGS: ALLOWED_TAGS, ALLOWED_ATTR: ALLOWED_ATTR });
  }

  window.liminalMarkdown = { render: render };
})();
