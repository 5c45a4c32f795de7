// An alert's page: an on-site photo the center would refuse (too large, not a JPEG) is refused on the phone,
// in the page's language, before it is sent: over a slow network a 12 MB upload takes minutes, and the proxy
// refuses one over its own limit with an English page of its own.
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
})();
