//! The status page at `/` of the metrics listener: every service and real with its state and
//! why, weight, flows, traffic rates and last check, refreshed every two seconds from
//! `/status.json` (what `xdplb status --json` prints). One self-contained document, no
//! external assets, so it works on an isolated network; read-only; laid out for a phone too.

/// The page. Rates are the difference between two refreshes; text is inserted with
/// `textContent` only, so nothing from the policy (a service name) can become markup.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>xdplb status</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d1d1f; background: #f5f5f7; }
  body { margin: 0; padding: 12px; }
  h1 { font-size: 1.2em; margin: 0 0 4px; }
  #meta { color: #555; font-size: 0.85em; margin-bottom: 12px; }
  #error { color: #b00020; font-weight: bold; }
  section { background: #fff; border-radius: 8px; padding: 10px; margin-bottom: 12px;
            box-shadow: 0 1px 2px rgba(0,0,0,.1); }
  h2 { font-size: 1em; margin: 0 0 6px; }
  h2 small { font-weight: normal; color: #555; }
  table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
  th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #eee; vertical-align: top; }
  th { color: #555; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state { font-weight: bold; text-transform: uppercase; font-size: 0.8em; padding: 1px 6px;
           border-radius: 4px; color: #fff; }
  .up { background: #1e7d32; } .down { background: #b00020; }
  .drained { background: #a15c00; } .halted { background: #555; }
  .why { color: #555; font-size: 0.85em; }
  @media (max-width: 640px) {
    thead { display: none; }
    tr { display: block; border-bottom: 1px solid #ddd; padding: 4px 0; }
    td { display: flex; justify-content: space-between; border: 0; padding: 2px 4px; }
    td::before { content: attr(data-label); color: #555; margin-right: 12px; }
    td.num { text-align: left; }
  }
</style>
</head>
<body>
<h1>xdplb</h1>
<div id="meta">loading...</div>
<div id="error"></div>
<div id="services"></div>
<script>
"use strict";
let previous = null;
const columns = ["Real", "State", "Weight", "Flows", "Packets/s", "Bits/s", "Check"];

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function si(n) {
  const units = ["", "k", "M", "G", "T"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : Math.round(n).toString()) + units[i];
}
function cell(row, label, content, cls) {
  const td = el("td", undefined, cls);
  td.dataset.label = label;
  if (typeof content === "string") td.textContent = content; else td.appendChild(content);
  row.appendChild(td);
}
// An IPv6 address in brackets before a port, as in URLs: [2001:2::11]:8080.
function withPort(address, port) { return (address.includes(":") ? "[" + address + "]" : address) + ":" + port; }
function realKey(service, real) { return service.name + "/" + real.address + ":" + (real.port || ""); }

function render(status, seconds) {
  const before = new Map();
  if (previous) for (const s of previous.services) for (const r of s.reals) before.set(realKey(s, r), r);
  const root = document.getElementById("services");
  root.replaceChildren();
  for (const s of status.services) {
    const section = el("section");
    const h2 = el("h2", s.name + " ");
    h2.appendChild(el("small", withPort(s.vip, s.ports.join(",")) + "/" + s.protocol + " " +
      s.forwarding + ", " + s.scheduler + (s.vip_held ? "" : " (VIP not on this node)")));
    section.appendChild(h2);
    const table = el("table");
    const head = el("thead"); const hr = el("tr");
    for (const c of columns) hr.appendChild(el("th", c));
    head.appendChild(hr); table.appendChild(head);
    const body = el("tbody");
    for (const r of s.reals) {
      const row = el("tr");
      const name = (r.port ? withPort(r.address, r.port) : r.address) + (r.role !== "real" ? " (" + r.role + ")" : "");
      cell(row, "Real", name);
      const state = el("div");
      state.appendChild(el("span", r.state, "state " + r.state));
      state.appendChild(el("div", r.reason, "why"));
      cell(row, "State", state);
      cell(row, "Weight", String(r.weight), "num");
      cell(row, "Flows", String(r.flows), "num");
      const old = before.get(realKey(s, r));
      const pps = old && seconds > 0 ? (r.packets - old.packets) / seconds : null;
      const bps = old && seconds > 0 ? 8 * (r.bytes - old.bytes) / seconds : null;
      cell(row, "Packets/s", pps === null ? "-" : si(pps), "num");
      cell(row, "Bits/s", bps === null ? "-" : si(bps), "num");
      const check = r.check
        ? r.check.kind + ": " + r.check.result + " (" + r.check.latency_ms.toFixed(1) + " ms)"
        : "-";
      cell(row, "Check", check);
      body.appendChild(row);
    }
    table.appendChild(body);
    section.appendChild(table);
    root.appendChild(section);
  }
  const ready = status.readiness && status.readiness.not_ready ? "not ready: " + status.readiness.not_ready : "ready";
  document.getElementById("meta").textContent =
    "policy " + status.policy_fingerprint + " - " + ready + " - updated " + new Date().toLocaleTimeString();
}

let last = 0;
async function refresh() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const status = await response.json();
    const now = Date.now();
    render(status, last ? (now - last) / 1000 : 0);
    previous = status; last = now;
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach the controller: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;
