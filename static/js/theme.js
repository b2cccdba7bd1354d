/* The colour theme: "system" (follow the operating system), "light" or "dark", remembered in
   localStorage. Loaded without `defer` in <head>, so a remembered choice is on <html data-theme>
   before the first paint and a dark page never flashes white. The top bar's button cycles
   through the three. */
(function () {
  "use strict";
  var KEY = "liminal-theme";
  var THEMES = ["system", "light", "dark"];
  var DESCRIPTIONS = { system: "follows the system", light: "light", dark: "dark" };
  var root = document.documentElement;

  function remembered() {
    try {
      var theme = localStorage.getItem(KEY);
      return THEMES.indexOf(theme) > 0 ? theme : "system";
    } catch (error) {
      return "system"; // storage blocked: the system's choice, every time
    }
  }

  function remember(theme) {
    try {
      if (theme === "system") localStorage.removeItem(KEY);
      else localStorage.setItem(KEY, theme);
    } catch (error) {
      /* this page still switches; the next one starts from the system's choice */
    }
  }

  function apply(theme) {
    if (theme === "system") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", theme);
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    var next = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    var label = "Colour theme: " + DESCRIPTIONS[theme] + ". Switch to " + DESCRIPTIONS[next];
    button.setAttribute("aria-label", label);
    button.title = label;
    button.dataset.theme = theme;
  }

  var current = remembered();
  apply(current);

  document.addEventListener("DOMContentLoaded", function () {
    apply(current);
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.addEventListener("click", function () {
      current = THEMES[(THEMES.indexOf(current) + 1) % THEMES.length];
      remember(current);
      apply(current);
    });
  });

  // Another tab changed the theme: follow it.
  window.addEventListener("storage", function (event) {
    if (event.key !== KEY && event.key !== null) return;
    current = remembered();
    apply(current);
  });
})();
