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
  var RETRY_MS = 5000; // a stream refused outright (the proxy's 502 while the center restarts) is opened again
  // this long after: the browser itself retries only a connection that dropped, never one that was answered
  var stream = null;
  var newest = null; // the newest case the stream has told of: one newer on a reconnection came meanwhile

  var page = Number(new URLSearchParams(window.location.search).get("page")) || 1;

  function offline() {
    live.textContent = live.dataset.off;
    live.classList.add("off");
    document.body.dataset.live = "0";
  }

  function online() {
    live.textContent = live.dataset.on;
    live.classList.remove("off");
    document.body.dataset.live = "1";
  }

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
        if (r.redirected || r.status === 401 || r.status === 403) {
          window.location.reload(); // logged out: the server shows the login page
          return null;
        }
        if (!r.ok) {
          offline(); // the center or its proxy is down (502, 503): the list stays, and is fetched again later
          return null;
        }
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        rows.innerHTML = html;
        // A fetch that failed said "reconnecting": this one came, so the list is live again if its stream is.
        if (stream && stream.readyState === EventSource.OPEN) online();
        if (isNew) {
          unseen += 1;
          showBadge();
          beep();
          var first = rows.querySelector("tr[data-case]");
          if (first && page === 1) first.classList.add("fresh"); // an older page's first row is not new
        }
      })
      .catch(offline); // no network: the same
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

  function connect() {
    stream = new EventSource("/alerts/stream");
    stream.addEventListener("change", function (ev) {
      var data = JSON.parse(ev.data);
      newest = data.case;
      refresh(Boolean(data.new));
    });
    stream.addEventListener("hello", function (ev) {
      var mark = JSON.parse(ev.data).case;
      if (newest !== null) refresh(mark > newest); // connected again: what changed while it was not
      newest = mark;
      online();
    });
    stream.addEventListener("ended", function () {
      stream.close();
      window.location.reload(); // the session ended: the server shows the login page
    });
    stream.onerror = function () {
      offline();
      if (stream.readyState === EventSource.CLOSED) {
        window.setTimeout(function () {
          refresh(false); // logged out meanwhile: this shows the login page
          connect();
        }, RETRY_MS);
      }
    };
  }
  connect();
})();
