// The costs view: GET /api/reports/costs?charts=true (the numbers of `switchyard report`), drawn with the Vega
// bundle the API serves from the installed vl-convert-python package (/costs/vega.js): no other host is asked.
"use strict";

const SPEND = ["tasks", "attempts", "succeeded", "fell_back", "input_tokens", "output_tokens", "cache_read_tokens",
  "cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "ollama_compute_s", "cost_usd", "share_pct",
  "cost_per_succeeded_usd"];
const SAVINGS = ["tasks", "succeeded", "cost_usd", "baseline_usd", "saving_usd", "saving_pct"];

function fill(id, headers, rows) {
  const table = document.getElementById(id);
  const head = document.createElement("tr");
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const cell of row) { const td = document.createElement("td"); td.textContent = cell ?? ""; tr.appendChild(td); }
    body.appendChild(tr);
  }
}

function grouped(report, names) {
  const keys = report.by;
  const rows = report.rows.map((r) => [...keys.map((k) => r[k]), ...names.map((n) => r[n]), r.flags.join("; ")]);
  const total = report.total;
  rows.push([...keys.map((_, i) => (i === 0 ? "total" : "")), ...names.map((n) => total[n]), total.flags.join("; ")]);
  return [[...keys, ...names, "flags"], rows];
}

const usd = (micros) => (micros === null ? "" : (micros / 1e6).toFixed(4));

function show(report) {
  fill("spend", ...grouped(report, SPEND));
  fill("savings", ...grouped(report, SAVINGS));
  const ledger = report.ledger;
  const lines = [
    `Period ${report.since} .. ${report.until} (UTC). Ledger settled $${ledger.settled_usd}: ` +
      (ledger.reconciled ? "reconciled." : "DOES NOT MATCH."),
    report.baseline.how,
    ...report.flags.map((f) => "Flag: " + f),
  ];
  if (report.peak_hour) lines.push(`Peak hour ${report.peak_hour.hour} UTC: $${usd(report.peak_hour.cost_micros)}`);
  document.getElementById("lines").replaceChildren(...lines.map((text) => {
    const p = document.createElement("p"); p.textContent = text; return p;
  }));
  fill("budgets", ["budget", "cap $", "alert $", "used $", "held $", "left $", "used %", "alerts", "at cap",
    "rate $/h", "window end $", "month end $", "cap reached"], report.budgets.map((b) => [
    `${b.scope} ${b.target} ${b.window}`, usd(b.cap_micros), usd(b.alert_micros), usd(b.used_micros),
    usd(b.held_micros), usd(b.remaining_micros), b.used_pct, b.alerts_fired, b.action, usd(b.rate_micros_per_h),
    usd(b.projected_window_micros), usd(b.projected_month_micros),
    b.cap_reached_at ? b.cap_reached_at + (b.cap_reached_in_window ? " (in this window)" : "") : "not at this rate"]));
  fill("kinds", ["kind", "cost $", "tasks", "share %"], report.by_kind.map((k) => [k.kind, k.cost_usd, k.tasks,
    k.share_pct]));
  fill("top", ["task", "kind", "env", "status", "provider", "attempts", "cost $", "title"], report.top_tasks.map(
    (t) => [t.id.slice(0, 8), t.kind, t.env, t.status, t.provider, t.attempts, usd(t.cost_micros), t.title]));
  const charts = document.getElementById("charts");
  charts.replaceChildren();
  for (const [name, spec] of Object.entries(report.charts)) {
    const div = document.createElement("div");
    div.id = "chart-" + name;
    div.className = "chart";
    charts.appendChild(div);
    vegaEmbed(div, spec, { actions: false, renderer: "svg" }).catch((e) => console.error("chart " + name, e));
  }
}

async function load() {
  const form = new FormData(document.getElementById("query"));
  const params = new URLSearchParams({ charts: "true" });
  for (const [key, value] of form.entries()) if (value) params.set(key, value);
  const answer = await authFetch("/api/reports/costs?" + params.toString());
  const body = await answer.json();
  const error = document.getElementById("error");
  if (!answer.ok) { error.textContent = body.error || answer.statusText; return; }
  error.textContent = "";
  show(body);
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

document.getElementById("query").addEventListener("submit", (event) => { event.preventDefault(); load(); });
onLogin(load);
load();
