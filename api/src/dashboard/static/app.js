// Zoark dashboard: live updates. Pages work without this script; with it, a page whose <body>
// has data-live ("jobs" or "agents": which events concern it) listens to the event stream (/api/v1/events, authenticated by the session
// cookie) and, when something changes, fetches the page again and swaps every [data-region]
// element for its new version, at most once a second. Nothing else on the page moves, so focus
// and form inputs are kept.
(function () {
  "use strict";

  var live = document.body.getAttribute("data-live");
  if (!live || !window.WebSocket || !window.fetch) {
    return;
  }
  var status = document.getElementById("live-status");
  var pending = false;
  var inFlight = false;
  var lastRefresh = 0;
  var MIN_INTERVAL_MS = 1000;

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function swapRegions(html) {
    var next = new DOMParser().parseFromString(html, "text/html");
    var regions = document.querySelectorAll("[data-region]");
    for (var i = 0; i < regions.length; i++) {
      var name = regions[i].getAttribute("data-region");
      var fresh = next.querySelector('[data-region="' + name + '"]');
      if (fresh && fresh.innerHTML !== regions[i].innerHTML) {
        // Ticked checkboxes (jobs selected for a bulk action) stay ticked across the swap.
        var ticked = regions[i].querySelectorAll("input[type=checkbox]:checked");
        var ids = [];
        for (var t = 0; t < ticked.length; t++) {
          ids.push(ticked[t].id);
        }
        regions[i].innerHTML = fresh.innerHTML;
        for (var k = 0; k < ids.length; k++) {
          var box = ids[k] && document.getElementById(ids[k]);
          if (box) {
            box.checked = true;
          }
        }
      }
    }
  }

  function refresh() {
    if (inFlight) {
      pending = true;
      return;
    }
    var wait = lastRefresh + MIN_INTERVAL_MS - Date.now();
    if (wait > 0) {
      if (!pending) {
        pending = true;
        setTimeout(function () {
          pending = false;
          refresh();
        }, wait);
      }
      return;
    }
    inFlight = true;
    lastRefresh = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) {
          throw new Error("status " + response.status);
        }
        return response.text();
      })
      .then(swapRegions)
      .catch(function () {
        say("Live updates paused: reload the page.");
      })
      .then(function () {
        inFlight = false;
        if (pending) {
          pending = false;
          refresh();
        }
      });
  }

  var retryMs = 1000;
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/api/v1/events");
    socket.onopen = function () {
      retryMs = 1000;
      document.body.setAttribute("data-connected", "true");
      say("");
      // Whatever changed between the page's rendering (or the last connection) and now.
      refresh();
    };
    socket.onmessage = function (message) {
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      var relevant = live === "agents"
        ? event.type === "agent_run" || event.type === "agent_step"
        : event.type === "job" || event.type === "platform_jobs";
      if (relevant || event.type === "lagged") {
        refresh();
      }
    };
    socket.onclose = function () {
      document.body.setAttribute("data-connected", "false");
      say("Live updates reconnecting…");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    };
  }
  connect();
})();
