/* Live updates of the fleet and device pages (server-sent events) and the device plots (uPlot).
 *
 * The server renders everything; this file only swaps what it pushes: on the fleet page, the rows shown
 * (event "rows": <tr> elements replacing those with the same id) and the summary (event "summary"); on a
 * device page, the status panel (event "panel") and the plot data (event "series", JSON for uPlot).
 * After htmx swaps the fleet table (sort, filter, page), the stream is reopened for the new rows.
 * body[data-live] is "1" while the stream is open (the header dot, and tests wait on it).
 */
(function () {
  "use strict";

  var source = null;
  var updates = 0;

  function setLive(on) {
    document.body.dataset.live = on ? "1" : "0";
  }

  function openStream(url, handlers) {
    if (source) {
      source.close();
    }
    setLive(false);
    source = new EventSource(url);
    source.onopen = function () { setLive(true); };
    source.onerror = function () { setLive(false); };
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (e) {
        handlers[name](e.data);
        updates += 1;
        document.body.dataset.updates = String(updates);
      });
    });
  }

  // Replace every element of `html` that has an id with the element of the same id on the page.
  function replaceById(html, flash) {
    var t = document.createElement("template");
    t.innerHTML = html;
    Array.prototype.slice.call(t.content.children).forEach(function (el) {
      var old = el.id ? document.getElementById(el.id) : null;
      if (!old) {
        return;
      }
      el.removeAttribute("hx-swap-oob");
      old.replaceWith(el);
      if (flash) {
        el.classList.add("flash");
      }
      if (window.htmx) {
        window.htmx.process(el);
      }
    });
  }

  // ---- fleet page -----------------------------------------------------------------------------------

  var streamIds = null;

  function fleet() {
    var body = document.getElementById("fleet-rows");
    if (!body) {
      return false;
    }
    streamIds = body.dataset.ids || "";
    openStream("/events/fleet?ids=" + encodeURIComponent(streamIds), {
      rows: function (data) { replaceById(data, true); },
      summary: function (data) { replaceById(data, false); }
    });
    return true;
  }

  // ---- device page ----------------------------------------------------------------------------------

  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  var plots = {};
  window.edgePlots = plots;

  // Label counts per bucket, stacked: series i is the sum of labels i..n-1, drawn filled from the largest
  // down, so each band shows one label's count; the legend shows the label's own count.
  function stacked(lab) {
    var names = Object.keys(lab.counts || {});
    names.sort(function (a, b) { return sum(lab.counts[b]) - sum(lab.counts[a]); });
    var acc = lab.t.map(function () { return 0; });
    var out = [];
    for (var i = names.length - 1; i >= 0; i--) {
      var own = lab.counts[names[i]];
      acc = acc.map(function (v, j) { return v + own[j]; });
      out.unshift([names[i] || "(none)", acc.slice(), "stack", own]);
    }
    return out;
  }

  function sum(a) {
    return a.reduce(function (x, y) { return x + y; }, 0);
  }

  function specs(d) {
    var r = d.results, t = d.telemetry;
    return {
      rate: { x: r.t, series: [["results/s", r.rate, true]] },
      latency: { x: r.t, series: [["mean µs", r.lat_mean], ["max µs", r.lat_max]] },
      host: { x: t.t, series: [["CPU %", t.cpu], ["memory %", t.mem]] },
      temp: { x: t.t, series: [["°C", t.temp]] },
      outbox: { x: t.t, series: [["records", t.outbox, true]] },
      labels: { x: d.labels.t, series: stacked(d.labels) }
    };
  }

  function hasData(spec) {
    return spec.x.length > 0 && spec.series.some(function (s) {
      return s[1].some(function (v) { return v !== null && v !== undefined; });
    });
  }

  function drawPlot(el, name, spec) {
    var fig = el.closest("figure");
    var ok = hasData(spec);
    if (fig) {
      fig.dataset.empty = ok ? "0" : "1";
    }
    var data = [spec.x].concat(spec.series.map(function (s) { return s[1]; }));
    var old = plots[name];
    var sameShape = old && old.series.length === data.length &&
      old.series.slice(1).every(function (s, i) { return s.label === spec.series[i][0]; });
    if (sameShape) {
      old.setData(data);
      return;
    }
    if (old) {
      old.destroy();
    }
    var opts = {
      width: Math.max(240, el.clientWidth || 400),
      height: 170,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: { x: { time: true } },
      axes: [{ stroke: "#555" }, { stroke: "#555", size: 56 }],
      series: [{}].concat(spec.series.map(function (s, i) {
        var c = COLORS[i % COLORS.length];
        var opt = { label: s[0], stroke: c, width: 1.5, fill: s[2] ? c + "22" : undefined, spanGaps: true,
                    points: { show: spec.x.length < 3 } };
        if (s[2] === "stack") {
          opt.fill = c + "cc";
          opt.width = 1;
          opt.paths = window.uPlot.paths.stepped({ align: 1 });
        }
        return opt;
      }))
    };
    el.innerHTML = "";
    plots[name] = new window.uPlot(opts, data, el);
  }

  function drawAll(d) {
    if (!window.uPlot) {
      return;
    }
    var s = specs(d);
    document.querySelectorAll("[data-plot]").forEach(function (el) {
      var name = el.dataset.plot;
      if (s[name]) {
        drawPlot(el, name, s[name]);
      }
    });
    document.body.dataset.plots = String(Object.keys(plots).length);
  }

  function device() {
    var root = document.getElementById("device-page");
    if (!root) {
      return false;
    }
    fetch(root.dataset.series, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(drawAll);
    openStream(root.dataset.stream, {
      panel: function (data) { replaceById(data, false); },
      series: function (data) { drawAll(JSON.parse(data)); }
    });
    var width = window.innerWidth;
    window.addEventListener("resize", function () {
      if (Math.abs(window.innerWidth - width) < 20) {
        return;
      }
      width = window.innerWidth;
      document.querySelectorAll("[data-plot]").forEach(function (el) {
        var p = plots[el.dataset.plot];
        if (p) {
          p.setSize({ width: Math.max(240, el.clientWidth), height: 170 });
        }
      });
    });
    return true;
  }

  function start() {
    if (!fleet()) {
      device();
    }
    document.body.addEventListener("htmx:afterSettle", function () {
      var body = document.getElementById("fleet-rows");
      if (body && streamIds !== null && (body.dataset.ids || "") !== streamIds) {
        fleet();
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
