/* treadle ui: curves of a run (or of runs overlaid) drawn with uPlot from the page's JSON
   endpoint, polled while a run is live. No build step; labels are set as text, never HTML. */
(function () {
  "use strict";
  var root = document.querySelector(".charts[data-series-url]");
  if (!root || typeof uPlot === "undefined") { return; }

  var COLORS = ["#2f6fdf", "#e8590c", "#2b9a4a", "#c2255c", "#7048e8", "#0c8599", "#a07d00", "#5c6b7a"];
  var INTEGER_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000,
    1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];
  var baseUrl = root.getAttribute("data-series-url");
  var pollMs = parseInt(root.getAttribute("data-poll-ms"), 10) || 1000;
  var statusLine = root.querySelector("[data-live-status]");
  var axis = "step";
  var version = null;
  var charts = {};          // key -> {element, plot, labels}
  var timer = null;
  var lastData = null;

  function text(tag, value, className) {
    var element = document.createElement(tag);
    if (value !== undefined && value !== null) { element.textContent = value; }
    if (className) { element.className = className; }
    return element;
  }

  function formatNumber(value) {
    if (value === null || value === undefined) { return "-"; }
    var magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-4)) { return value.toExponential(3); }
    return String(Number(value.toPrecision(5)));
  }

  function describeAge(seconds) {
    if (seconds < 2) { return "just now"; }
    if (seconds < 120) { return Math.round(seconds) + " s ago"; }
    if (seconds < 7200) { return Math.round(seconds / 60) + " min ago"; }
    return Math.round(seconds / 3600) + " h ago";
  }

  function plotWidth(element) {
    return Math.max(240, element.querySelector(".plot").clientWidth || element.clientWidth - 24);
  }

  function seriesColor(index) { return COLORS[index % COLORS.length]; }

  function chartData(chart) {
    var data = [chart.x];
    chart.series.forEach(function (series) { data.push(series.values); });
    return data;
  }

  function legendText(series) {
    var count = series.points.toLocaleString("en");
    if (series.downsampled) {
      return count + " of " + series.total.toLocaleString("en") + " points (downsampled)";
    }
    var noun = series.points === 1 ? " point" : " points";
    return count + noun + (series.aggregated ? " (epoch means)" : "");
  }

  function fillLegend(element, chart) {
    var legend = element.querySelector("ul.legend");
    legend.textContent = "";
    var total = 0;
    chart.series.forEach(function (series) {
      var item = text("li");
      item.setAttribute("data-series", series.label);
      item.setAttribute("data-points", String(series.points));
      item.setAttribute("data-total", String(series.total));
      var swatch = text("span", null, "swatch");
      swatch.setAttribute("data-swatch", String(series.color % COLORS.length));
      item.appendChild(swatch);
      item.appendChild(text("span", series.label));
      item.appendChild(text("span", legendText(series), "muted"));
      legend.appendChild(item);
      total += series.points;
    });
    element.setAttribute("data-points", String(total));
  }

  function makeChart(chart) {
    var element = text("div", null, "chart" + (chart.key === "loss" ? " wide" : ""));
    element.setAttribute("data-chart", chart.key);
    element.appendChild(text("h3", chart.title));
    var plotElement = text("div", null, "plot");
    element.appendChild(plotElement);
    var readout = text("div", "\u00a0", "readout");
    element.appendChild(readout);
    element.appendChild(text("ul", null, "legend"));
    root.appendChild(element);
    var options = {
      width: plotWidth(element),
      height: chart.key === "loss" ? 280 : 220,
      legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { size: 6 } },
      scales: { x: { time: false } },
      axes: [
        { label: chart.axis, labelSize: 22, incrs: INTEGER_STEPS, stroke: "#8a94a6",
          grid: { stroke: "rgba(128,128,128,0.15)" }, ticks: { stroke: "rgba(128,128,128,0.3)" } },
        { stroke: "#8a94a6", size: 60, grid: { stroke: "rgba(128,128,128,0.15)" },
          ticks: { stroke: "rgba(128,128,128,0.3)" },
          values: function (u, values) { return values.map(formatNumber); } }
      ],
      series: [{ label: chart.axis }].concat(chart.series.map(function (series) {
        return {
          label: series.label, stroke: seriesColor(series.color), width: 1.6, spanGaps: true,
          points: { show: series.points <= 80, size: 5 }
        };
      })),
      hooks: {
        setCursor: [function (u) {
          var index = u.cursor.idx;
          if (index === null || index === undefined) { readout.textContent = "\u00a0"; return; }
          var parts = [chart.axis + " " + formatNumber(u.data[0][index])];
          for (var s = 1; s < u.data.length; s++) {
            var value = u.data[s][index];
            if (value !== null && value !== undefined) {
              parts.push(u.series[s].label + " " + formatNumber(value));
            }
          }
          readout.textContent = parts.join("   ");
        }]
      }
    };
    var plot = new uPlot(options, chartData(chart), plotElement);
    fillLegend(element, chart);
    return { element: element, plot: plot, signature: signature(chart) };
  }

  function signature(chart) {
    return chart.axis + "|" + chart.series.map(function (series) {
      return series.label + ":" + series.color + ":" + (series.points <= 80);
    }).join("|");
  }

  function render(data) {
    var seen = {};
    data.charts.forEach(function (chart) {
      seen[chart.key] = true;
      var existing = charts[chart.key];
      if (existing && existing.signature === signature(chart)) {
        existing.plot.setData(chartData(chart));
        fillLegend(existing.element, chart);
        return;
      }
      if (existing) { existing.plot.destroy(); existing.element.remove(); }
      charts[chart.key] = makeChart(chart);
    });
    Object.keys(charts).forEach(function (key) {
      if (!seen[key]) { charts[key].plot.destroy(); charts[key].element.remove(); delete charts[key]; }
    });
    // keep the panels in the server's order (the loss panel first)
    data.charts.forEach(function (chart) { root.appendChild(charts[chart.key].element); });
  }

  function updateRunStatus(data) {
    var badge = document.querySelector("[data-run-status]");
    if (!badge || data.runs.length !== 1) { return; }
    var run = data.runs[0];
    if (badge.textContent !== run.status) {
      badge.textContent = run.status;
      badge.className = "status tone-" + run.tone;
    }
  }

  function describe(data) {
    var rows = data.rows.toLocaleString("en") + (data.rows === 1 ? " row" : " rows");
    if (!data.charts.length) {
      return data.live
        ? "No metrics yet: the run is live, and the experiment logger writes its rows at each epoch's end (and every 30 s). Checking every " + pollMs / 1000 + " s."
        : "No metrics logged.";
    }
    var age = data.last_logged_at ? ", last logged " + describeAge(Date.now() / 1000 - data.last_logged_at) : "";
    if (data.live) {
      return "Live: " + rows + age + "; checking for new points every " + pollMs / 1000 + " s.";
    }
    return rows + age + ".";
  }

  // The page's other parts (facts, epochs, alerts, checkpoints) are rendered on the server:
  // while a run is live, or when it has just finished, fetch the page again and swap them in.
  var refreshing = false;
  function refreshDetails() {
    var parts = document.querySelectorAll("[data-refresh][id]");
    if (!parts.length || refreshing) { return; }
    refreshing = true;
    fetch(window.location.pathname + window.location.search, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (body) {
        if (body === null) { return; }
        var fresh = new DOMParser().parseFromString(body, "text/html");
        parts.forEach(function (part) {
          var replacement = fresh.getElementById(part.id);
          if (replacement) { part.replaceWith(document.importNode(replacement, true)); }
        });
      })
      .catch(function () { /* the next change tries again */ })
      .then(function () { refreshing = false; });
  }

  function schedule(delay) {
    if (timer !== null) { clearTimeout(timer); }
    timer = setTimeout(load, delay);
  }

  function load() {
    timer = null;
    var started = Date.now();
    var url = baseUrl + (baseUrl.indexOf("?") >= 0 ? "&" : "?") + "axis=" + encodeURIComponent(axis);
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            throw new Error(body.error || ("HTTP " + response.status));
          });
        }
        return response.json();
      })
      .then(function (data) {
        var wasLive = lastData !== null && lastData.live;
        lastData = data;
        if (data.version !== version) {
          var isUpdate = version !== null;
          render(data);
          version = data.version;
          if (isUpdate && (data.live || wasLive)) { refreshDetails(); }
          root.setAttribute("data-version", data.version);
        }
        root.setAttribute("data-live", data.live ? "true" : "false");
        updateRunStatus(data);
        statusLine.textContent = describe(data);
        if (data.live) {
          // never poll faster than ten times what a read costs: a huge run slows its page, not the store
          schedule(Math.max(data.poll_ms || pollMs, (Date.now() - started) * 10));
        }
      })
      .catch(function (error) {
        statusLine.textContent = "Could not load the curves (" + error.message + "); trying again.";
        schedule(Math.max(pollMs, 3000));
      });
  }

  document.querySelectorAll(".axis-toggle input[name=axis]").forEach(function (input) {
    input.addEventListener("change", function () {
      if (!input.checked) { return; }
      axis = input.value;
      version = null;
      Object.keys(charts).forEach(function (key) { charts[key].plot.destroy(); charts[key].element.remove(); });
      charts = {};
      load();
    });
  });

  if (typeof ResizeObserver !== "undefined") {
    var resizing = null;
    new ResizeObserver(function () {
      if (resizing !== null) { return; }
      resizing = requestAnimationFrame(function () {
        resizing = null;
        Object.keys(charts).forEach(function (key) {
          var chart = charts[key];
          chart.plot.setSize({ width: plotWidth(chart.element), height: chart.plot.height });
        });
      });
    }).observe(root);
  }

  // the status line's "last logged ... ago" keeps counting between polls
  setInterval(function () { if (lastData) { statusLine.textContent = describe(lastData); } }, 5000);
  load();
}());
