// The report's print button (no inline script: the pages' CSP allows scripts from this site's files only).
document.getElementById("print").addEventListener("click", function (ev) {
  ev.preventDefault();
  window.print();
});
