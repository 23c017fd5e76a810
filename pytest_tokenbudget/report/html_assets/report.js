(function () {
  "use strict";
  // The per-test table: sort by any column (a button in each header: mouse or keyboard), filter by
  // test id and by what needs attention. The URL's hash sets both, e.g.
  // report.html#sort=cost&dir=desc&q=test_chat&show=budget, through the same buttons a reader uses.
  var root = document.documentElement;
  root.setAttribute("data-scheme", matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  var table = document.getElementById("tb-tests");
  if (!table) {
    root.setAttribute("data-ready", "true");
    return;
  }
  var data = JSON.parse(document.getElementById("tb-data").textContent);
  var keys = data.keys; // one array of numbers (or null) per row, in the rows' first order
  var index = data.index; // key name -> position in those arrays
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var said = document.getElementById("tb-sort-status");
  var query = document.getElementById("tb-filter");
  var show = document.getElementById("tb-show");
  var shown = document.getElementById("tb-shown");
  var ids = null; // lower-cased test ids, read on the first filter

  function sortBy(th, direction) {
    var column = headers.indexOf(th);
    var key = th.getAttribute("data-key");
    var values = rows.map(function (row, i) {
      return key === null ? row.cells[column].textContent : keys[i][index[key]];
    });
    var sign = direction === "ascending" ? 1 : -1;
    var order = rows.map(function (_, i) { return i; });
    order.sort(function (a, b) {
      var x = values[a];
      var y = values[b];
      if (x === y) return a - b; // ties keep the first order (heaviest first)
      if (x === null) return 1; // no value sorts last either way
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    var fragment = document.createDocumentFragment();
    order.forEach(function (i) { fragment.appendChild(rows[i]); });
    body.appendChild(fragment);
    headers.forEach(function (h) {
      if (h.hasAttribute("aria-sort")) h.setAttribute("aria-sort", h === th ? direction : "none");
    });
    said.textContent = "Sorted by " + th.textContent.trim() + ", " + direction + ".";
  }

  headers.forEach(function (th) {
    var button = th.querySelector("button");
    if (!button) return;
    button.addEventListener("click", function () {
      var now = th.getAttribute("aria-sort");
      var first = th.getAttribute("data-key") === null ? "ascending" : "descending";
      var next = now === "descending" ? "ascending" : now === "ascending" ? "descending" : first;
      sortBy(th, next);
    });
  });

  function passes(which, k) {
    if (which === "calls") return k[index.calls] > 0;
    if (which === "budget") return k[index.budget] !== null && k[index.budget] <= 2;
    if (which === "changed") return index.delta !== undefined && k[index.delta] !== null && k[index.delta] !== 0;
    return true;
  }

  function filter() {
    if (ids === null) ids = rows.map(function (row) { return row.cells[0].textContent.toLowerCase(); });
    var q = query.value.trim().toLowerCase();
    var which = show.value;
    var count = 0;
    rows.forEach(function (row, i) {
      var keep = (!q || ids[i].indexOf(q) !== -1) && passes(which, keys[i]);
      row.hidden = !keep;
      if (keep) count += 1;
    });
    shown.textContent = count === rows.length ? "all " + rows.length + " rows" : count + " of " + rows.length + " rows";
  }

  var pending = 0;
  query.addEventListener("input", function () {
    clearTimeout(pending);
    pending = setTimeout(filter, 120);
  });
  show.addEventListener("change", filter);

  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    if (params.has("q")) query.value = params.get("q");
    if (params.has("show") && show.querySelector('option[value="' + CSS.escape(params.get("show")) + '"]')) {
      show.value = params.get("show");
    }
    filter();
    var name = params.get("sort");
    var th = name ? table.querySelector('thead th[data-col="' + CSS.escape(name) + '"]') : null;
    if (th) {
      var want = params.get("dir") === "asc" ? "ascending" : "descending";
      var button = th.querySelector("button");
      for (var n = 0; n < 3 && th.getAttribute("aria-sort") !== want; n += 1) button.click();
    }
  }

  document.getElementById("tb-controls").hidden = false;
  window.addEventListener("hashchange", fromHash);
  fromHash();
  root.setAttribute("data-ready", "true");
})();
