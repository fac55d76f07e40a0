// Switchyard dashboard: polls the status API and redraws. Text goes in through textContent only.
"use strict";

const POLL_MS = 5000;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function counts(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–";
}

function money(value) {
  return Number(value || 0).toFixed(4);
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function drawStatus(status) {
  document.getElementById("profile").textContent = `profile: ${status.profile}`;
  const chips = Object.entries(status.tasks.by_status).map(([s, n]) => el("span", `${s}: ${n}`, `s-${s}`));
  chips.unshift(el("span", `total: ${status.tasks.total}`));
  document.getElementById("status-counts").replaceChildren(...chips);
  fill("groups", status.groups.map((g) => row([
    g.name, g.queue, g.sessions, g.kinds.join(", "), g.ladder.join(" → "), g.active, counts(g.counts),
  ])));
}

function stageCell(stage) {
  const td = el("td");
  td.appendChild(el("div", counts(stage.counts)));
  const last = stage.last_result;
  if (last) td.appendChild(el("div", `last: ${last.kind} ${last.status} – ${last.summary || ""}`, `muted s-${last.status}`));
  return td;
}

function drawEnvironments(data) {
  const envs = data.environments;
  const stages = envs.length ? envs[0].stages.map((s) => s.name) : [];
  const head = document.querySelector("#environments thead");
  head.replaceChildren(row(["environment", "branch", "port", ...stages].map((h) => el("th", h))));
  fill("environments", envs.map((env) => {
    const name = el("td", env.initialized ? env.name : `${env.name} (not initialized)`, env.initialized ? "" : "uninit");
    return row([name, env.branch, env.port ?? "–", ...env.stages.map(stageCell)]);
  }));
}

function drawCosts(costs, budgets) {
  document.getElementById("cost-total").textContent =
    `$${money(costs.total.cost_usd)} spent · $${money(costs.total.held_usd)} held · ${costs.total.calls} calls`;
  fill("costs", costs.providers.map((p) => row([
    p.provider, p.calls, p.input_tokens, p.cached_input_tokens, p.output_tokens, p.compute_seconds.toFixed(1), money(p.cost_usd),
  ])));
  fill("budgets", budgets.budgets.map((b) => row([
    `${b.scope}/${b.window}`, b.target, money(b.spent_usd), money(b.held_usd), b.cap_usd,
    el("td", b.exhausted ? `at cap (${b.action})` : b.alerting ? "alert" : "ok", b.exhausted || b.alerting ? "s-failed" : "s-succeeded"),
  ])));
}

function drawTasks(data) {
  fill("tasks", data.tasks.map((t) => row([
    (t.created_at || "").replace("T", " ").slice(0, 19), t.id.slice(0, 8), t.kind, `${t.environment}/${t.stage}`,
    el("td", t.status, `s-${t.status}`), t.provider ? `${t.provider} ${t.model || ""}` : "–", money(t.cost_usd),
    t.reason ? `${t.title} — ${t.reason}` : t.title,
  ])));
}

async function drawHealth() {
  const badge = document.getElementById("health");
  try {
    const health = await getJson("/api/multi-env/health");
    const failing = Object.entries(health.checks).filter(([, c]) => !c.ok).map(([name]) => name);
    badge.textContent = health.ok ? "health: ok" : `degraded: ${failing.join(", ")}`;
    badge.className = `tag ${health.ok ? "ok" : "bad"}`;
  } catch (error) {
    badge.textContent = "health: unreachable";
    badge.className = "tag bad";
  }
}

async function refresh() {
  try {
    const [status, envs, tasks, costs, budgets] = await Promise.all([
      getJson("/api/multi-env/status"), getJson("/api/multi-env/environments"), getJson("/api/tasks?limit=25"),
      getJson("/api/costs"), getJson("/api/budgets"),
    ]);
    drawStatus(status);
    drawEnvironments(envs);
    drawTasks(tasks);
    drawCosts(costs, budgets);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    document.getElementById("updated").textContent = `update failed: ${error.message}`;
  }
  drawHealth();
}

refresh();
setInterval(refresh, POLL_MS);
