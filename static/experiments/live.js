/* imqueue live dashboard: the websockets of experiments/live/consumers.py, no build step.
 *
 *   imqLiveSocket(path, onMessage, opts) -> {close()}   reconnects by itself with backoff
 *   imqLiveRun(body, {runId})                           the run page (history, then live)
 *   imqLiveOverview(table, {runUrl})                    the overview's table
 *
 * A run message is {type: "run", run: {status, ended, progress, ledger, verdict, summary},
 * columns: {t_s: [...], ...}}: only samples after the last one this socket sent. On reconnect
 * the page asks for ?after=<the last t_s it has>, so it gets no gap and no repeat.
 */
(function (global) {
  "use strict";

  var FORBIDDEN = 4403, NOT_FOUND = 4404;

  function wsUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  // Open path; on a drop, open it again after 0.5 s, 1 s, 2 s ... up to 10 s. A refusal
  // (not logged in, not staff) is final: reconnecting cannot help.
  function imqLiveSocket(path, onMessage, opts) {
    opts = opts || {};
    var delayMs = 500, socket = null, stopped = false, status = document.getElementById("connection");
    function say(text) { if (status) status.textContent = text; }
    function open() {
      var opened = false;
      socket = new WebSocket(wsUrl(typeof path === "function" ? path() : path));
      socket.onopen = function () { opened = true; delayMs = 500; say("live"); };
      socket.onmessage = function (e) { onMessage(JSON.parse(e.data)); };
      socket.onclose = function (e) {
        if (stopped) return;
        if (e.code === FORBIDDEN || e.code === NOT_FOUND || (!opened && e.code === 1006 && opts.refusedIsFinal)) {
          say(e.code === NOT_FOUND ? "no such run" : "not allowed: log in as staff");
          return;
        }
        say("reconnecting in " + (delayMs / 1000) + " s…");
        setTimeout(open, delayMs);
        delayMs = Math.min(delayMs * 2, 10000);
      };
    }
    open();
    return {close: function () { stopped = true; if (socket) socket.close(); }};
  }

  function fmt(v, digits) {
    if (v == null) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en");
    return v.toFixed(digits == null ? 1 : digits);
  }

  function last(columns, name) {
    var values = columns[name];
    return values && values.length ? values[values.length - 1] : null;
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  var NOW = [["produced", "produce_eps", 0], ["consumed", "consume_eps", 0], ["offered", "offered_eps", 0],
    ["depth", "depth"], ["backlog", "backlog"], ["p50", "p50_ms", 2], ["p99", "p99_ms", 2],
    ["p999", "p999_ms", 2], ["max", "max_ms", 2]];
  var SUMMARY = [["verdict", "verdict"], ["duration (s)", "duration_s"], ["events/s", "throughput_eps"],
    ["unique", "unique"], ["duplicates", "duplicates"], ["lost", "lost"], ["sum", "sum"],
    ["expected sum", "expected_sum"],
    ["error", "error"]];

  function imqLiveRun(body, opts) {
    var columns = null, charts = null, chartsEl = document.getElementById("charts");

    function lastT() { return columns && columns.t_s.length ? columns.t_s[columns.t_s.length - 1] : null; }

    function applyColumns(more) {
      if (!more || !more.t_s || !more.t_s.length) return;
      if (!columns) columns = {};
      Object.keys(more).forEach(function (k) { columns[k] = (columns[k] || []).concat(more[k]); });
      NOW.forEach(function (f) { setText(f[0], fmt(last(columns, f[1]), f[2])); });
      var none = document.getElementById("no-samples");
      if (none) none.remove();
      if (charts) charts.update(columns); else charts = global.imqTimeCharts(chartsEl, columns);
    }

    function applyRun(run) {
      if (!run) return;
      var status = document.getElementById("status");
      status.textContent = run.status;
      status.dataset.state = run.ended ? "ended" : run.status;
      body.dataset.state = run.ended ? "ended" : "live";
      var box = document.getElementById("progress-box");
      box.hidden = run.progress == null;
      document.getElementById("progress").value = run.progress || 0;
      setText("progress-text", run.progress == null ? "" : Math.round(run.progress * 100) + "%");
      var ledger = run.ledger || {};
      setText("unique", fmt(ledger.unique));
      setText("duplicates", fmt(ledger.duplicates));
      setText("lost", ledger.lost == null ? "(at the end)" : fmt(ledger.lost));
      var error = document.getElementById("error");
      error.hidden = !run.error;
      error.textContent = run.error || "";
      if (run.ended) showEnd(run);
    }

    function showEnd(run) {
      setText("verdict", run.verdict || run.status);
      var cancel = document.getElementById("cancel");  // absent for a user who may not cancel
      if (cancel) cancel.disabled = true;
      var summary = run.summary || {}, table = document.getElementById("summary");
      table.innerHTML = "";
      SUMMARY.forEach(function (f) {
        if (summary[f[1]] === undefined || summary[f[1]] === null) return;
        var tr = table.insertRow(), th = document.createElement("th");
        th.textContent = f[0];
        tr.appendChild(th);
        tr.insertCell().textContent = fmt(summary[f[1]], 2);
      });
      var latency = summary.latency_ms || {};
      ["p50", "p99", "p999", "max"].forEach(function (p) {
        if (latency[p] == null) return;
        var tr = table.insertRow(), th = document.createElement("th");
        th.textContent = "latency " + p + " (ms)";
        tr.appendChild(th);
        tr.insertCell().textContent = fmt(latency[p], 2);
      });
      document.getElementById("final").hidden = false;
    }

    function onMessage(message) {
      applyColumns(message.columns);  // samples first: the state's end shows after the last chart point
      applyRun(message.run);
      if (message.run && message.run.ended) {
        if (!columns) {
          var none = document.getElementById("no-samples");
          if (none) none.textContent = "This run has no samples.";
        }
        socket.close();  // nothing more will come
        setText("connection", "ended");
      }
    }

    var socket = imqLiveSocket(function () {
      var t = lastT();
      return "/ws/runs/" + opts.runId + "/" + (t == null ? "" : "?after=" + encodeURIComponent(t));
    }, onMessage);
    return socket;
  }

  function imqLiveOverview(table, opts) {
    var tbody = table.tBodies[0];
    function cell(tr, value, cls) {
      var td = tr.insertCell();
      if (cls) td.className = cls;
      if (value instanceof Node) td.appendChild(value); else td.textContent = value;
    }
    function onMessage(message) {
      if (message.type !== "overview") return;
      tbody.innerHTML = "";
      if (!message.runs.length) { cell(tbody.insertRow(), "No runs yet."); return; }
      message.runs.forEach(function (r) {
        var tr = tbody.insertRow(), a = document.createElement("a");
        tr.dataset.runId = r.id;
        a.href = opts.runUrl.replace(/0\/$/, r.id + "/");
        a.textContent = r.id;
        cell(tr, a);
        cell(tr, r.experiment);
        cell(tr, r.backend);
        cell(tr, r.status);
        cell(tr, r.progress == null ? "–" : Math.round(r.progress * 100) + "%", "num");
        cell(tr, fmt(r.events_s, 0), "num");
        cell(tr, fmt(r.p99_ms, 2), "num");
        cell(tr, r.verdict || "–");
      });
      document.body.dataset.state = "live";
    }
    return imqLiveSocket("/ws/runs/", onMessage);
  }

  global.imqLiveSocket = imqLiveSocket;
  global.imqLiveRun = imqLiveRun;
  global.imqLiveOverview = imqLiveOverview;
})(window);
