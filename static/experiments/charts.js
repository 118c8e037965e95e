/* imqueue charts: small functions over the vendored uPlot (static/vendor/uplot), no build step.
 *
 *   imqTimeCharts(el, columns, opts) -> {update(columns), destroy()}  a run's samples over time
 *   imqOverlayCharts(el, data)       -> {destroy()}  compare: one line per run, one chart a figure
 *   imqXYChart(el, data)             -> {destroy()}  a sweep: y against a knob's values
 *   imqPoll(url, intervalMs, onData) -> {stop()}     fetch JSON while onData returns true
 *
 * Columns are the JSON of experiments.live.views.run_samples: {t_s: [...], p99_ms: [...], ...};
 * null is a gap (an interval with no delivery has no latency). columns.markers holds, per
 * sample, what happened in its interval (faults, replaced workers, reconnects: [{t_s, kind,
 * target, outcome}] or null): each is a dashed vertical line on every time chart, and the list
 * of them is a table under the charts.
 */
(function (global) {
  "use strict";

  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  var X_LABEL = "time into run (s)";

  // The charts of a run: each line names its sample column; a line whose column is all null
  // (offered_eps of a burst run) is left out rather than drawn as an empty legend entry.
  var TIME_FIGURES = [
    {title: "Throughput", unit: "events/s", lines: [
      ["produce_eps", "produced"], ["consume_eps", "consumed"], ["offered_eps", "offered"]]},
    {title: "Latency (end to end, per interval)", unit: "ms", lines: [
      ["p50_ms", "p50"], ["p99_ms", "p99"], ["p999_ms", "p99.9"], ["max_ms", "max"]]},
    {title: "Depth", unit: "events", lines: [["depth", "queue depth"], ["backlog", "backlog"]]},
  ];

  // Faults in red shades, what the run did about them in grey: the cause stands out.
  var MARKER_COLOURS = {"kill-consumer": "#d62728", "kill-producer": "#d62728", "pause-consumer": "#ff7f0e",
    "cut-connections": "#9467bd", "restart-server": "#8c564b", "poison": "#e377c2", "killed": "#d62728"};
  var MARKER_QUIET = {"reconnect": true, "replaced": true, "resume": true};  // a line, no label

  function markersOf(columns) {
    var out = [];
    (columns.markers || []).forEach(function (list) { if (list) out = out.concat(list); });
    return out;
  }

  // A uPlot plugin drawing markers as dashed vertical lines, labelled with their kind.
  function markersPlugin(getMarkers) {
    return {hooks: {draw: [function (u) {
      var markers = getMarkers();
      if (!markers.length) return;
      var ctx = u.ctx, dpr = global.devicePixelRatio || 1, top = u.bbox.top, bottom = top + u.bbox.height;
      ctx.save();
      ctx.setLineDash([4 * dpr, 3 * dpr]);
      ctx.lineWidth = dpr;
      ctx.font = (10 * dpr) + "px sans-serif";
      ctx.textAlign = "left";  // uPlot leaves its axes' alignment set
      ctx.textBaseline = "alphabetic";
      markers.forEach(function (m, i) {
        var x = u.valToPos(m.t_s, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        var colour = MARKER_COLOURS[m.kind] || "#7f7f7f";
        ctx.strokeStyle = colour;
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, bottom);
        ctx.stroke();
        if (!MARKER_QUIET[m.kind]) {
          ctx.fillStyle = colour;
          ctx.fillText(m.kind, x + 3 * dpr, top + (12 + 11 * (i % 3)) * dpr);  // staggered: close ones stay legible
        }
      });
      ctx.restore();
    }]}};
  }

  function formatNumber(v) {
    if (v == null) return "–";
    var abs = Math.abs(v);
    if (abs >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (abs >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (abs >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return v.toPrecision(3);
  }

  function withUnit(unit) {
    return function (u, v) { return v == null ? "–" : formatNumber(v) + " " + unit; };
  }

  function hasValue(values) {
    if (!values) return false;
    for (var i = 0; i < values.length; i++) if (values[i] != null) return true;
    return false;
  }

  function chartWidth(el) {
    return Math.max(320, (el.clientWidth || 900) - 16);
  }

  // One uPlot chart in a fresh child of el. c = {title, xLabel, xUnit, axesY, lines, data, height, plugins}
  function makeChart(el, c) {
    var box = document.createElement("div");
    box.className = "imq-chart";
    el.appendChild(box);
    var opts = {
      title: c.title,
      width: chartWidth(el),
      height: c.height || 240,
      // a run's time axis starts at its start (0 s), so a marker before the first sample shows
      scales: {x: c.xFromZero ? {time: false, range: function (u, min, max) { return [0, max]; }} : {time: false}},
      series: [{label: c.xLabel, value: withUnit(c.xUnit)}].concat(c.lines),
      axes: [{label: c.xLabel}].concat(c.axesY),
      plugins: c.plugins || [],
    };
    return new global.uPlot(opts, c.data, box);
  }

  function yAxis(unit, extra) {
    var a = {label: unit, size: 60, values: function (u, ticks) { return ticks.map(formatNumber); }};
    for (var k in extra || {}) a[k] = extra[k];
    return a;
  }

  function line(label, i, unit, extra) {
    var s = {label: label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false,
      value: withUnit(unit)};
    for (var k in extra || {}) s[k] = extra[k];
    return s;
  }

  // The lines of a time figure that the columns have values for.
  function presentLines(figure, columns) {
    return figure.lines.filter(function (l) { return hasValue(columns[l[0]]); });
  }

  function timeKey(columns) {
    return TIME_FIGURES.map(function (f) {
      return presentLines(f, columns).map(function (l) { return l[0]; }).join(",");
    }).join("|");
  }

  function imqTimeCharts(el, columns, opts) {
    opts = opts || {};
    var charts = [];
    var key = null;
    var markers = markersOf(columns);
    var plugin = markersPlugin(function () { return markers; });
    var table = document.createElement("table");
    table.className = "imq-markers";

    function showMarkers() {
      table.innerHTML = "";
      if (!markers.length) { table.remove(); return; }
      var head = table.insertRow();
      ["t (s)", "what", "on", "outcome"].forEach(function (h) {
        var th = document.createElement("th"); th.textContent = h; head.appendChild(th);
      });
      markers.forEach(function (m) {
        var row = table.insertRow();
        [m.t_s.toFixed(2), m.kind, m.target, m.outcome].forEach(function (v) { row.insertCell().textContent = v; });
      });
      el.appendChild(table);  // after the charts
    }

    function draw(cols) {
      destroy();
      key = timeKey(cols);
      TIME_FIGURES.forEach(function (figure) {
        var lines = presentLines(figure, cols);
        if (!lines.length) return;
        var data = [cols.t_s].concat(lines.map(function (l) { return cols[l[0]]; }));
        var series = lines.map(function (l, i) { return line(l[1], i, figure.unit); });
        var chart = makeChart(el, {title: figure.title + " (" + figure.unit + ")", xLabel: X_LABEL,
          xUnit: "s", axesY: [yAxis(figure.unit)], lines: series, data: data, height: opts.height,
          plugins: [plugin], xFromZero: true});
        charts.push({chart: chart, columns: lines.map(function (l) { return l[0]; })});
      });
      showMarkers();
    }

    function update(cols) {
      // Same lines as drawn: new data in place (uPlot setData keeps the DOM and the cursor);
      // a line that appeared or vanished changes the legend, so redraw.
      var now = markersOf(cols);
      if (now.length !== markers.length) { markers = now; showMarkers(); }
      if (timeKey(cols) !== key) return draw(cols);
      charts.forEach(function (c) {
        c.chart.setData([cols.t_s].concat(c.columns.map(function (name) { return cols[name]; })));
      });
    }

    function destroy() {
      charts.forEach(function (c) { c.chart.destroy(); });
      charts = [];
      el.querySelectorAll(".imq-chart").forEach(function (n) { n.remove(); });
    }

    draw(columns);
    trackWidth(el, function () { return charts.map(function (c) { return c.chart; }); });
    return {update: update, destroy: destroy};
  }

  // Keep the charts as wide as their container when the window is resized.
  function trackWidth(el, getCharts) {
    var pending = null;
    global.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        getCharts().forEach(function (c) { c.setSize({width: chartWidth(el), height: c.height}); });
      }, 150);
    });
  }

  // The runs' samples are taken at slightly different times: put them on the union of their
  // t_s, each run null where it has no sample (spanGaps joins its points across those).
  function alignSeries(series) {
    var xs = {};
    series.forEach(function (s) { s.t_s.forEach(function (t) { xs[t] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var index = new Map(x.map(function (t, i) { return [t, i]; }));
    var ys = series.map(function (s) {
      var y = new Array(x.length).fill(null);
      s.t_s.forEach(function (t, i) { y[index.get(t)] = s.values[i]; });
      return y;
    });
    return [x].concat(ys);
  }

  function imqOverlayCharts(el, data) {
    var charts = Object.keys(data).map(function (name) {
      var figure = data[name];
      var lines = figure.series.map(function (s, i) { return line(s.name, i, figure.unit, {spanGaps: true}); });
      return makeChart(el, {title: figure.label + " (" + figure.unit + ")", xLabel: X_LABEL, xUnit: "s",
        axesY: [yAxis(figure.unit)], lines: lines, data: alignSeries(figure.series)});
    });
    trackWidth(el, function () { return charts; });
    return {destroy: function () { charts.forEach(function (c) { c.destroy(); }); }};
  }

  // data = {title, x: {label, unit, values: [...]}, y: [{label, unit, values: [...]}, ...]}:
  // the first y on the left axis, a second (another unit) on the right.
  function imqXYChart(el, data) {
    var order = data.x.values.map(function (v, i) { return i; })
      .sort(function (a, b) { return data.x.values[a] - data.x.values[b]; });
    var pick = function (values) { return order.map(function (i) { return values[i]; }); };
    var axes = [];
    var lines = data.y.slice(0, 2).map(function (y, i) {
      var scale = "y" + i;
      axes.push(yAxis(y.label + " (" + y.unit + ")", {scale: scale, side: i === 0 ? 3 : 1, grid: {show: i === 0}}));
      return line(y.label, i, y.unit, {scale: scale, points: {show: true, size: 7}, spanGaps: true});
    });
    var xLabel = data.x.label + (data.x.unit ? " (" + data.x.unit + ")" : "");
    var chart = makeChart(el, {title: data.title || "", xLabel: xLabel, xUnit: data.x.unit || "", axesY: axes,
      lines: lines, data: [pick(data.x.values)].concat(data.y.slice(0, 2).map(function (y) { return pick(y.values); }))});
    trackWidth(el, function () { return [chart]; });
    return {destroy: function () { chart.destroy(); }};
  }

  // url: a string, or a function returning one (to ask only for what is new). Polls again
  // only while onData(json) returns true; an HTTP error or a non-JSON answer (a lost login is
  // a redirect to the login page) stops it and calls onData(null, error).
  function imqPoll(url, intervalMs, onData) {
    var timer = null;
    var stopped = false;
    function tick() {
      var target = typeof url === "function" ? url() : url;
      fetch(target, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (r) {
          if (!r.ok || !(r.headers.get("Content-Type") || "").startsWith("application/json")) {
            throw new Error("HTTP " + r.status + " from " + target);
          }
          return r.json();
        })
        .then(function (json) {
          if (!stopped && onData(json) === true) timer = setTimeout(tick, intervalMs);
        })
        .catch(function (err) {
          stopped = true;
          if (global.console) global.console.warn("imqPoll stopped:", err);
          onData(null, err);
        });
    }
    tick();
    return {stop: function () { stopped = true; clearTimeout(timer); }};
  }

  global.imqTimeCharts = imqTimeCharts;
  global.imqOverlayCharts = imqOverlayCharts;
  global.imqXYChart = imqXYChart;
  global.imqPoll = imqPoll;
})(window);
