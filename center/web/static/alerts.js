// The alert list keeps itself current: the server says when something changed (server-sent events) and the
// rows are fetched again as server-rendered HTML. A new case adds to the badge and beeps.
(function () {
  "use strict";
  var rows = document.getElementById("rows");
  var badge = document.getElementById("badge");
  var live = document.getElementById("live");
  var unseen = 0;
  var audio = null;
  var WAITED_REFRESH_MS = 30000; // "waited" is counted on the server: the rows are fetched again this often

  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = 880;
      gain.gain.value = 0.15;
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.4);
    } catch (e) {
      // no sound device: the badge still shows
    }
  }

  function showBadge() {
    badge.textContent = String(unseen);
    badge.hidden = unseen === 0;
    document.title = (unseen ? "(" + unseen + ") " : "") + document.title.replace(/^\(\d+\) /, "");
  }

  function refresh(isNew) {
    fetch("/alerts/rows" + window.location.search, { credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || !r.ok) {
          window.location.reload(); // logged out, or the server is unhappy: show it
          return null;
        }
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        rows.innerHTML = html;
        if (isNew) {
          unseen += 1;
          showBadge();
          beep();
          var first = rows.querySelector("tr[data-case]");
          if (first) first.classList.add("fresh");
        }
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      unseen = 0;
      showBadge();
    }
  });
  document.addEventListener("click", function () {
    unseen = 0;
    showBadge();
    if (audio && audio.state === "suspended") audio.resume();
  });

  window.setInterval(function () {
    if (!document.hidden) refresh(false);
  }, WAITED_REFRESH_MS);

  var stream = new EventSource("/alerts/stream");
  stream.addEventListener("change", function (ev) {
    var data = JSON.parse(ev.data);
    refresh(Boolean(data.new));
  });
  stream.addEventListener("hello", function () {
    live.textContent = live.dataset.on;
    live.classList.remove("off");
    document.body.dataset.live = "1";
  });
  stream.addEventListener("ended", function () {
    stream.close();
    window.location.reload(); // the session ended: the server shows the login page
  });
  stream.onerror = function () {
    live.textContent = live.dataset.off;
    live.classList.add("off");
  };
})();
