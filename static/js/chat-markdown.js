// Markdown for an answer while it streams; the server renders the finished answer
// (apps/conversations/rendering.py). Same rule as there: the model's text is untrusted, so raw
// HTML in it is shown as text. Here that holds by construction: every piece of the text is
// escaped before it is wrapped in one of the few tags written below, and a link's address must
// start with http:, https: or mailto:. Unfinished constructs (an open code fence) render as
// if they were closed, so code looks like code while it is being written.
(function () {
  "use strict";

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  var CODE_SPAN = /(`+)([^`\n]|[^`\n][\s\S]*?[^`\n])\1(?!`)/g;

  // Inline markup of one block's text: code spans first (nothing inside them is markup), then
  // on the escaped rest: links, strong, emphasis. Escaped text holds no quote or angle bracket,
  // so no pattern below can produce a tag or leave an attribute.
  function inline(text) {
    var out = "", last = 0, match;
    CODE_SPAN.lastIndex = 0;
    while ((match = CODE_SPAN.exec(text)) !== null) {
      out += emphasis(escapeHtml(text.slice(last, match.index)));
      out += "<code>" + escapeHtml(match[2].trim() || match[2]) + "</code>";
      last = CODE_SPAN.lastIndex;
    }
    return out + emphasis(escapeHtml(text.slice(last)));
  }

  function emphasis(escaped) {
    return escaped
      .replace(/\[([^\]\n]+)\]\(((?:https?:\/\/|mailto:)[^\s()]+)\)/g,
        '<a href="$2" rel="noopener noreferrer nofollow">$1</a>')
      .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
      .replace(/(^|[^\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>");
  }

  var FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^`]*$/;
  var HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  var RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  var QUOTE = /^ {0,3}>\s?(.*)$/;
  var ITEM = /^ {0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;

  function listKind(marker) { return /\d/.test(marker) ? "ol" : "ul"; }

  function render(text) {
    var lines = text.replace(/\r\n?/g, "\n").split("\n");
    var html = [], paragraph = [], i = 0, match;

    function flush() {
      if (paragraph.length) html.push("<p>" + paragraph.map(inline).join("<br>\n") + "</p>");
      paragraph = [];
    }

    while (i < lines.length) {
      var line = lines[i];
      if ((match = FENCE.exec(line))) {
        flush();
        var fence = match[1], code = [];
        i += 1;
        while (i < lines.length && !new RegExp("^ {0,3}" + fence[0] + "{" + fence.length + ",}\\s*$").test(lines[i])) {
          code.push(lines[i]);
          i += 1;
        }
        i += 1;  // the closing fence, or past the end while it is still being written
        var language = match[2] ? ' class="language-' + escapeHtml(match[2]) + '"' : "";
        html.push("<pre><code" + language + ">" + escapeHtml(code.join("\n")) + "</code></pre>");
        continue;
      }
      if (!line.trim()) { flush(); i += 1; continue; }
      if ((match = HEADING.exec(line))) {
        flush();
        var level = match[1].length;
        html.push("<h" + level + ">" + inline(match[2]) + "</h" + level + ">");
        i += 1;
        continue;
      }
      if (RULE.test(line) && !paragraph.length) { html.push("<hr>"); i += 1; continue; }
      if (QUOTE.test(line)) {
        flush();
        var quoted = [];
        while (i < lines.length && (match = QUOTE.exec(lines[i]))) { quoted.push(match[1]); i += 1; }
        html.push("<blockquote>" + render(quoted.join("\n")) + "</blockquote>");
        continue;
      }
      if ((match = ITEM.exec(line))) {
        flush();
        var kind = listKind(match[1]), items = [];
        while (i < lines.length) {
          var item = ITEM.exec(lines[i]);
          if (item && listKind(item[1]) === kind) {
            items.push([item[2]]);
          } else if (item || !lines[i].trim() || !/^\s/.test(lines[i])) {
            break;
          } else {
            items[items.length - 1].push(lines[i].trim());
          }
          i += 1;
        }
        html.push("<" + kind + ">" + items.map(function (parts) {
          return "<li>" + parts.map(inline).join("<br>\n") + "</li>";
        }).join("") + "</" + kind + ">");
        continue;
      }
      paragraph.push(line);
      i += 1;
    }
    flush();
    return html.join("\n");
  }

  window.liminalMarkdown = { render: function (text) { return render(String(text)); } };
})();
