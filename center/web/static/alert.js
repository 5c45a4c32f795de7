// An alert's page: an on-site photo the center would refuse (too large, not a JPEG) is refused on the phone,
// in the page's language, before it is sent: over a slow network a 12 MB upload takes minutes, and the proxy
// refuses one over its own limit with an English page of its own. A button is sent once: a second tap while
// the first is on its way would cancel it and start the upload again from nothing.
(function () {
  "use strict";
  document.querySelectorAll("input[type=file][data-max-bytes]").forEach(function (input) {
    var said = document.getElementById(input.dataset.said);
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      var why = "";
      if (file && file.size > Number(input.dataset.maxBytes)) {
        why = input.dataset.tooBig;
      } else if (file && file.type && file.type !== "image/jpeg") {
        why = input.dataset.notJpeg; // a type the browser does not know is left to the center to judge
      }
      input.setCustomValidity(why); // the form is not sent while this is said
      said.textContent = why;
      said.hidden = !why;
    });
  });

  // The page says when the case has moved since it was shown (someone acted, a clip or its signature came),
  // rather than reloading itself: a note half typed or a photo chosen would be lost.
  var updated = document.getElementById("case-updated");
  var MARK_POLL_MS = 10000; // a worker's verdict shows on the dispatcher's open page within seconds
  function askMark() {
    if (document.hidden || !updated.hidden) return;
    var asked = { credentials: "same-origin", redirect: "error", headers: { Accept: "application/json" } };
    fetch(updated.dataset.markUrl, asked)
      .then(function (r) {
        return r.ok ? r.json() : null; // logged out (401), the center away: asked again later
      })
      .then(function (body) {
        if (body && body.mark !== updated.dataset.mark) updated.hidden = false;
        updated.dataset.asked = String(Number(updated.dataset.asked || 0) + 1); // for people and tests
      })
      .catch(function () {});
  }
  if (updated) {
    window.setInterval(askMark, MARK_POLL_MS);
    document.addEventListener("visibilitychange", askMark);
  }

  document.querySelectorAll("form[data-once]").forEach(function (form) {
    var button = form.querySelector("button[type=submit]");
    var label = button.textContent;
    form.addEventListener("submit", function (ev) {
      if (form.dataset.sent) {
        ev.preventDefault(); // the first is still on its way
        return;
      }
      form.dataset.sent = "1";
      button.textContent = form.dataset.once;
    });
    window.addEventListener("pageshow", function () {
      delete form.dataset.sent; // back to this page (the browser's back button): it may be sent again
      button.textContent = label;
    });
  });
})();
