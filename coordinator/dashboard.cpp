// The dashboard served at "/": one self-contained page (inline CSS, JS and
// SVG; nothing from the network but this coordinator's own JSON API). It
// polls /v1/status, /v1/rounds and /v1/devices every two seconds and draws
// accuracy and loss per round, the device table and, with differential
// privacy, the (epsilon, delta) spent so far. A ?token=... in the page
// address is passed on to the API calls.
#include "http_api.h"

namespace fedsgd {

const char* const kDashboardHtml = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fedsgd coordinator</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 12px 24px; display: flex; gap: 28px; flex-wrap: wrap; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0 16px 0 0; }
  header .kv b { display: block; font-size: 20px; }
  header .kv span { color: #aab3c5; font-size: 12px; text-transform: uppercase; }
  main { padding: 16px 24px; display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
  section { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  svg { width: 100%; height: 240px; }
  .axis { stroke: #c3c9d4; stroke-width: 1; }
  .grid { stroke: #eef0f4; stroke-width: 1; }
  .label { fill: #6b7486; font-size: 11px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eef0f4; font-variant-numeric: tabular-nums; }
  th { color: #6b7486; font-weight: 600; font-size: 12px; }
  .state-online, .state-idle { color: #1a7f37; } .state-training, .state-sending { color: #0969da; } .state-offline { color: #b42318; }
  #error { display: none; background: #fde7e9; color: #b42318; padding: 8px 24px; }
  .legend span { margin-right: 14px; font-size: 12px; } .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px; }
</style>
</head>
<body>
<header>
  <h1>fedsgd</h1>
  <div class="kv"><span>run</span><b id="run">-</b></div>
  <div class="kv"><span>state</span><b id="state">-</b></div>
  <div class="kv"><span>round</span><b id="round">-</b></div>
  <div class="kv"><span>devices online</span><b id="devices">-</b></div>
  <div class="kv"><span>test accuracy</span><b id="accuracy">-</b></div>
  <div class="kv"><span>model</span><b id="model">-</b></div>
  <div class="kv" id="privacy-box" style="display:none"><span>differential privacy</span><b id="privacy">-</b></div>
</header>
<div id="error"></div>
<main>
  <section><h2>Accuracy per round</h2>
    <div class="legend"><span><i style="background:#1a7f37"></i>test</span><span><i style="background:#0969da"></i>federated (devices' held-out data)</span><span><i style="background:#9ec5fe"></i>federated min / max over devices</span></div>
    <svg id="accuracy-chart" viewBox="0 0 600 240" preserveAspectRatio="none"></svg></section>
  <section><h2>Accuracy against time</h2>
    <div class="legend"><span><i style="background:#1a7f37"></i>test, by seconds since round 1 opened (asynchronous runs make versions unevenly)</span></div>
    <svg id="time-chart" viewBox="0 0 600 240" preserveAspectRatio="none"></svg></section>
  <section><h2>Loss per round</h2>
    <div class="legend"><span><i style="background:#d1242f"></i>test loss</span><span><i style="background:#8250df"></i>train loss</span></div>
    <svg id="loss-chart" viewBox="0 0 600 240" preserveAspectRatio="none"></svg></section>
  <section class="wide"><h2>Devices</h2>
    <table><thead><tr><th>id</th><th>state</th><th>address</th><th>last seen</th><th>rounds</th><th>accepted</th><th>rejected</th><th>samples</th><th>last loss</th><th>samples/s</th><th>progress</th><th>staleness</th></tr></thead>
    <tbody id="device-rows"></tbody></table></section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
let rounds = [];
let runId = null;
let asynchronous = false;

async function get(path) {
  const url = token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e);
  return e;
}

// Draws series [{key, color}] of `rounds` into an svg: axes, grid, one
// polyline and one circle (class "point", or "time-point" against time)
// per round and series. By round, or with `time` by seconds since round 1
// opened.
function chart(svg, series, fixedMax, time) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 600, H = 240, L = 44, R = 10, T = 10, B = 26;
  const values = rounds.flatMap(r => series.map(s => r[s.key])).filter(v => typeof v === "number");
  const yMax = fixedMax !== undefined ? fixedMax : Math.max(1e-9, ...values) * 1.1;
  const yMin = fixedMax !== undefined ? Math.max(0, Math.min(...values, yMax) - 0.05) : 0;
  const n = rounds.length;
  const t0 = n ? rounds[0].started_at : 0;
  const seconds = i => rounds[i].finished_at - t0;
  const span = n ? Math.max(1e-9, seconds(n - 1)) : 1;
  const x = time ? i => L + seconds(i) * (W - L - R) / span
                 : i => L + (n <= 1 ? (W - L - R) / 2 : i * (W - L - R) / (n - 1));
  const y = v => T + (H - T - B) * (1 - (v - yMin) / Math.max(1e-9, yMax - yMin));
  for (let k = 0; k <= 4; k++) {
    const v = yMin + (yMax - yMin) * k / 4;
    el("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}, svg);
    el("text", {class: "label", x: 4, y: y(v) + 4}, svg).textContent = v.toFixed(3);
  }
  el("line", {class: "axis", x1: L, x2: L, y1: T, y2: H - B}, svg);
  el("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}, svg);
  if (n > 0) {
    el("text", {class: "label", x: L, y: H - 8}, svg).textContent = time ? "0 s" : "round " + rounds[0].round;
    el("text", {class: "label", x: W - R - 70, y: H - 8}, svg).textContent =
        time ? span.toFixed(1) + " s" : "round " + rounds[n - 1].round;
  }
  for (const s of series) {
    const pts = rounds.map((r, i) => [i, r[s.key]]).filter(p => typeof p[1] === "number");
    if (pts.length > 1) {
      el("polyline", {points: pts.map(([i, v]) => x(i) + "," + y(v)).join(" "), fill: "none",
                      stroke: s.color, "stroke-width": 2}, svg);
    }
    for (const [i, v] of pts) {
      const c = el("circle", {class: (time ? "time-point " : "point ") + s.key, cx: x(i), cy: y(v),
                              r: n > 60 ? 1.5 : 3.5, fill: s.color, "data-round": rounds[i].round}, svg);
      el("title", {}, c).textContent = "round " + rounds[i].round + ": " + v.toFixed(4) +
          (time ? " at " + seconds(i).toFixed(1) + " s" : "");
    }
  }
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function devicesTable(devices) {
  const body = document.getElementById("device-rows");
  body.replaceChildren();
  for (const d of devices) {
    const tr = document.createElement("tr");
    tr.className = "device";
    tr.dataset.id = d.id;
    cell(tr, d.id);
    cell(tr, d.state, "state-" + d.state);
    cell(tr, d.address || "-");
    cell(tr, d.last_seen_seconds_ago.toFixed(1) + " s ago");
    cell(tr, d.rounds_joined);
    cell(tr, d.updates_accepted);
    const reasons = Object.entries(d.rejected_by_reason).map(([k, v]) => k + ": " + v).join(", ");
    cell(tr, d.updates_rejected + (reasons ? " (" + reasons + ")" : ""));
    cell(tr, d.samples);
    cell(tr, d.last_loss ? d.last_loss.toFixed(4) : "-");
    cell(tr, d.samples_per_second ? Math.round(d.samples_per_second).toLocaleString() : "-");
    cell(tr, d.state === "training" ? Math.round(100 * d.progress) + " %" : "-");
    cell(tr, asynchronous ? d.last_staleness : "-");
    body.appendChild(tr);
  }
}

async function refresh() {
  try {
    const status = await get("/v1/status");
    if (status.run_id !== runId) { runId = status.run_id; rounds = []; }
    const since = rounds.length ? rounds[rounds.length - 1].round : 0;
    rounds = rounds.concat(await get("/v1/rounds?since=" + since + "&limit=1000"));
    const devices = await get("/v1/devices");
    document.getElementById("run").textContent = status.run_id;
    document.getElementById("state").textContent = status.state;
    asynchronous = status.mode === "async";
    document.getElementById("round").textContent =
        status.round + " / " + status.rounds + (asynchronous ? " (asynchronous versions)" : "");
    document.getElementById("devices").textContent = status.devices_online + " / " + status.devices_total;
    document.getElementById("accuracy").textContent =
        typeof status.test_accuracy === "number" ? status.test_accuracy.toFixed(4) : "-";
    document.getElementById("model").textContent = status.model;
    const p = status.privacy;
    document.getElementById("privacy-box").style.display = p ? "" : "none";
    if (p) {
      document.getElementById("privacy").textContent =
          "privacy: eps = " + p.epsilon.toPrecision(3) + " at delta = " + p.delta.toExponential(0);
    }
    chart(document.getElementById("accuracy-chart"),
          [{key: "test_accuracy", color: "#1a7f37"}, {key: "federated_accuracy", color: "#0969da"},
           {key: "federated_accuracy_min", color: "#9ec5fe"}, {key: "federated_accuracy_max", color: "#9ec5fe"}], 1.0);
    chart(document.getElementById("time-chart"), [{key: "test_accuracy", color: "#1a7f37"}], 1.0, true);
    chart(document.getElementById("loss-chart"),
          [{key: "test_loss", color: "#d1242f"}, {key: "train_loss", color: "#8250df"}]);
    devicesTable(devices);
    document.getElementById("error").style.display = "none";
    document.body.dataset.loaded = "true";
  } catch (e) {
    const box = document.getElementById("error");
    box.textContent = "cannot reach the coordinator: " + e.message;
    box.style.display = "block";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";

}  // namespace fedsgd
