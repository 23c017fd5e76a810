(function () {
  "use strict";
  // Runs first: any later script error, console error or content-policy violation is shown on the
  // page (and counted on <html data-errors>), so a broken report says so instead of half working.
  var root = document.documentElement;
  var seen = [];
  function note(text) {
    seen.push(String(text));
    root.setAttribute("data-errors", String(seen.length));
    root.setAttribute("data-error-text", seen.join(" | "));
    var list = document.getElementById("tb-errors");
    if (list) {
      var item = document.createElement("li");
      item.textContent = text;
      list.appendChild(item);
      list.hidden = false;
    }
  }
  window.addEventListener("error", function (event) {
    note("script error: " + event.message);
  });
  window.addEventListener("unhandledrejection", function (event) {
    note("script error: " + event.reason);
  });
  document.addEventListener("securitypolicyviolation", function (event) {
    note("blocked by the report's content policy: " + event.violatedDirective);
  });
  var original = console.error;
  console.error = function () {
    note("console error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
