// Filtering and sorting for the feature index; no libraries, works from disk.
(function () {
  "use strict";
  const table = document.getElementById("features");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const selects = Array.from(document.querySelectorAll("#filters select"));
  const minDetection = document.getElementById("f-detection");
  const text = document.getElementById("f-text");
  const count = document.getElementById("count");

  function apply() {
    const min = parseFloat(minDetection.value) || 0;
    const needle = text.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      let ok = selects.every((s) => !s.value || row.dataset[s.dataset.col] === s.value);
      if (ok && min > 0) {
        const d = parseFloat(row.dataset.detection);
        ok = !Number.isNaN(d) && d >= min;
      }
      if (ok && needle) {
        ok = (row.dataset.explanation + " " + row.dataset.label).toLowerCase().includes(needle);
      }
      row.hidden = !ok;
      if (ok) shown += 1;
    }
    count.textContent = shown + " of " + rows.length + " shown";
  }

  function sortBy(th) {
    const key = th.dataset.key;
    const numeric = th.hasAttribute("data-num");
    const asc = !th.classList.contains("sorted-asc");
    for (const h of table.tHead.rows[0].cells) h.classList.remove("sorted-asc", "sorted-desc");
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    const value = (row) => {
      const v = row.dataset[key];
      if (!numeric) return v;
      const x = parseFloat(v);
      return Number.isNaN(x) ? -Infinity : x;  // missing values sort first
    };
    rows.sort((a, b) => {
      const va = value(a), vb = value(b);
      const c = numeric ? va - vb : String(va).localeCompare(String(vb), undefined, { numeric: true });
      return asc ? c : -c;
    });
    for (const row of rows) body.appendChild(row);
  }

  for (const el of [...selects, minDetection, text]) el.addEventListener("input", apply);
  for (const th of table.tHead.rows[0].cells) th.addEventListener("click", () => sortBy(th));
  apply();
})();
