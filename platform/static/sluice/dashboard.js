/* Draws the admin dashboard's charts with Chart.js from the figures the server put in the page
   (#sluice-dashboard-data). Each chart is kept in window.sluiceCharts under its canvas id. */
(function () {
  "use strict";
  var source = document.getElementById("sluice-dashboard-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var style = getComputedStyle(document.body);
  Chart.defaults.color = style.getPropertyValue("--body-quiet-color").trim() || "#666";
  Chart.defaults.borderColor = style.getPropertyValue("--hairline-color").trim() || "#e8e8e8";
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  var colours = {
    ok: "#417690", errors: "#ba2121", limited: "#e0a526", prompt: "#79aec8", completion: "#264b5d",
    p50: "#79aec8", p95: "#264b5d", flag: "#e0a526", redact: "#8e6bbf", block: "#ba2121"
  };
  window.sluiceCharts = {};

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) { window.sluiceCharts[id] = new Chart(canvas, config); }
  }
  function pick(rows, field) { return rows.map(function (row) { return row[field]; }); }
  function stacked(extra) {
    return Object.assign({ scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }, extra || {});
  }
  function requestsChart(id, rows, labels) {
    draw(id, {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { label: "served", backgroundColor: colours.ok,
            data: rows.map(function (r) { return r.requests - r.errors; }) },
          { label: "errors (not 429)", backgroundColor: colours.errors,
            data: rows.map(function (r) { return r.errors - r.rate_limited; }) },
          { label: "429", backgroundColor: colours.limited, data: pick(rows, "rate_limited") }
        ]
      },
      options: stacked()
    });
  }
  function tokensChart(id, rows, labels) {
    draw(id, {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { label: "prompt", backgroundColor: colours.prompt, data: pick(rows, "prompt_tokens") },
          { label: "completion", backgroundColor: colours.completion, data: pick(rows, "completion_tokens") }
        ]
      },
      options: stacked()
    });
  }
  function ranking(id, rows, label) {
    draw(id, {
      type: "bar",
      data: { labels: pick(rows, "name"), datasets: [{ label: label, backgroundColor: colours.ok, data: pick(rows, "tokens") }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } }
    });
  }

  if (data.daily) {
    var days = data.daily.map(function (r) { return r.bucket.slice(5); });
    requestsChart("chart-requests-daily", data.daily, days);
    tokensChart("chart-tokens-daily", data.daily, days);
    var hours = data.hourly.map(function (r) { return r.bucket.slice(5); });
    requestsChart("chart-requests-hourly", data.hourly, hours);
    tokensChart("chart-tokens-hourly", data.hourly, hours);
    ranking("chart-top-accounts", data.top_accounts, "tokens");
    ranking("chart-top-keys", data.top_keys, "tokens");
    var endpoints = pick(data.endpoints, "endpoint");
    draw("chart-latency", {
      type: "bar",
      data: {
        labels: endpoints,
        datasets: [
          { label: "p50", backgroundColor: colours.p50, data: pick(data.endpoints, "p50_ms") },
          { label: "p95", backgroundColor: colours.p95, data: pick(data.endpoints, "p95_ms") }
        ]
      },
      // Generation takes seconds and bookkeeping milliseconds: a log scale shows both.
      options: { scales: { y: { type: "logarithmic", title: { display: true, text: "ms (log scale)" } } } }
    });
    draw("chart-error-rates", {
      type: "bar",
      data: {
        labels: endpoints,
        datasets: [
          { label: "errors", backgroundColor: colours.errors,
            data: data.endpoints.map(function (r) { return +(100 * r.error_rate).toFixed(2); }) },
          { label: "429", backgroundColor: colours.limited,
            data: data.endpoints.map(function (r) { return +(100 * r.rate_limited_rate).toFixed(2); }) }
        ]
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "%" } } } }
    });
  }
  if (data.moderation) {
    var categories = data.moderation.by_category;
    draw("chart-moderation", {
      type: "bar",
      data: {
        labels: pick(categories, "category"),
        datasets: data.moderation.actions.map(function (action) {
          return { label: action, backgroundColor: colours[action] || colours.ok, data: pick(categories, action) };
        })
      },
      options: stacked({ indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true }, y: { stacked: true } } })
    });
  }
}());
