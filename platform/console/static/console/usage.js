/* The usage page's charts: requests and tokens per UTC day, from #console-usage-data (Chart.js, vendored). */
(function () {
  "use strict";
  var source = document.getElementById("console-usage-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var labels = data.days.map(function (d) { return d.day.slice(5); });
  function pick(field) { return data.days.map(function (d) { return d[field]; }); }
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  var stacked = { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
                  plugins: { legend: { position: "bottom" } } };
  window.consoleCharts = {
    requests: new Chart(document.getElementById("chart-requests"), {
      type: "bar",
      data: { labels: labels, datasets: [
        { label: "served", backgroundColor: "#2f6f8f",
          data: data.days.map(function (d) { return d.requests - d.errors; }) },
        { label: "errors", backgroundColor: "#c0392b", data: pick("errors") }
      ] },
      options: stacked
    }),
    tokens: new Chart(document.getElementById("chart-tokens"), {
      type: "bar",
      data: { labels: labels, datasets: [
        { label: "prompt", backgroundColor: "#8fbcd4", data: pick("prompt_tokens") },
        { label: "completion", backgroundColor: "#1d3f52", data: pick("completion_tokens") }
      ] },
      options: stacked
    })
  };
})();
