// Switchyard dashboard: polls the status API and redraws. Text goes in through textContent only.
// Every request goes to this host (no CDN), through authFetch (auth.js: the token, when the API wants one). A task's detail opens at #task/<id> (a link that can be shared).
"use strict";

const POLL_MS = 5000;
const STATUSES = ["queued", "running", "deferred", "succeeded", "failed", "rejected", "budget_exhausted", "no_provider", "cancelled"];
const KINDS = ["plan", "dev_task", "pr_review", "pr_impl", "pr_integ"];
const ACTIVE = ["queued", "running", "deferred"];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
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

function when(iso) {
  return (iso || "").replace("T", " ").slice(0, 19);
}

function taskLink(id, text) {
  const a = el("a", text || id.slice(0, 8));
  a.href = `#task/${id}`;
  return a;
}

function cellWith(...nodes) {
  const td = el("td");
  for (const node of nodes) td.appendChild(node instanceof Node ? node : el("span", node));
  return td;
}

async function getJson(path) {
  const response = await authFetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch (ignored) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

// --- the overview ------------------------------------------------------------------------------------------

function drawStatus(status) {
  document.getElementById("profile").textContent = `profile: ${status.profile}`;
  const chips = Object.entries(status.tasks.by_status).map(([s, n]) => el("span", `${s}: ${n}`, `s-${s}`));
  chips.unshift(el("span", `total: ${status.tasks.total}`));
  document.getElementById("status-counts").replaceChildren(...chips);
  fill("groups", status.groups.map((g) => row([
    g.name, g.queue, g.sessions, g.kinds.join(", "), g.ladder.join(" → "), g.active, counts(g.counts),
  ])));
}

function drawBreakers(data) {
  document.getElementById("breakers-note").textContent = "";
  fill("breakers", data.providers.map((p) => {
    const last = p.last_transition;
    const transition = last ? `${last.from} → ${last.to} at ${when(last.at)} (${last.cause})` : "none yet";
    return row([
      p.provider, el("td", p.state, `state-${p.state}`), p.failures,
      p.state === "closed" ? "–" : `${Number(p.retry_in_s).toFixed(0)} s`, transition, p.last_failure || "–",
      `${p.in_flight}${p.max_in_flight ? ` / ${p.max_in_flight}` : ""}`,
    ]);
  }));
}

function holdsCell(stage) {
  const td = el("td");
  const holds = stage.holds;
  if (holds) {
    td.appendChild(el("div", `${holds.commit.slice(0, 10)} · ${holds.how} from ${holds.from} · ${when(holds.at)}`, "holds"));
    if (holds.task_id) {
      const line = el("div", "", "muted");
      line.append("task ", taskLink(holds.task_id), ` ${holds.task_title || ""}`);
      td.appendChild(line);
    }
  } else {
    td.appendChild(el("div", "nothing merged or promoted yet", "muted holds"));
  }
  td.appendChild(el("div", counts(stage.counts), "muted"));
  return td;
}

function drawEnvironments(data) {
  const envs = data.environments;
  const stages = envs.length ? envs[0].stages.map((s) => s.name) : [];
  const head = document.querySelector("#environments thead");
  head.replaceChildren(row(["environment", "branch", "port", ...stages].map((h) => el("th", h))));
  fill("environments", envs.map((env) => {
    const name = el("td", env.initialized ? env.name : `${env.name} (not initialized)`, env.initialized ? "" : "uninit");
    return row([name, env.branch, env.port ?? "–", ...env.stages.map(holdsCell)]);
  }));
  const select = document.getElementById("filter-environment");
  if (select.options.length === 1) {
    for (const env of envs) select.appendChild(new Option(env.name, env.name));
  }
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

// --- tasks and their filters -------------------------------------------------------------------------------

function taskQuery() {
  const params = new URLSearchParams({ limit: "50" });
  for (const name of ["status", "kind", "environment"]) {
    const value = document.getElementById(`filter-${name}`).value;
    if (value) params.set(name, value);
  }
  return `/api/tasks?${params}`;
}

function drawTasks(data) {
  document.getElementById("tasks-count").textContent = `${data.count} shown`;
  fill("tasks", data.tasks.map((t) => {
    const tr = row([
      when(t.created_at), cellWith(taskLink(t.id)), t.kind, `${t.environment}/${t.stage}`,
      el("td", t.status, `s-${t.status}`), t.provider ? `${t.provider} ${t.model || ""}` : "–", money(t.cost_usd),
      t.reason ? `${t.title} — ${t.reason}` : t.title,
    ], "clickable");
    tr.dataset.id = t.id;
    tr.addEventListener("click", (event) => {
      if (event.target.tagName !== "A") window.location.hash = `task/${t.id}`;
    });
    return tr;
  }));
}

async function refreshTasks() {
  const query = taskQuery();
  const data = await getJson(query);
  if (query === taskQuery()) drawTasks(data);  // a filter changed meanwhile: a newer answer draws instead
}

function setUpFilters() {
  const fills = { status: STATUSES, kind: KINDS };
  for (const [name, values] of Object.entries(fills)) {
    const select = document.getElementById(`filter-${name}`);
    for (const value of values) select.appendChild(new Option(value, value));
  }
  document.getElementById("filters").addEventListener("change", () => {
    refreshTasks().catch(showFailure);
  });
}

// --- one task in detail ------------------------------------------------------------------------------------

function selectedTask() {
  const match = window.location.hash.match(/^#task\/([0-9a-fA-F-]{8,36})$/);
  return match ? match[1] : null;
}

function fact(list, name, value) {
  if (value === undefined || value === null || value === "") return;
  list.append(el("dt", name), el("dd", value));
}

function drawDetailHead(t) {
  document.getElementById("detail-id").textContent = t.id;
  const list = document.getElementById("detail-head");
  list.replaceChildren();
  fact(list, "kind", t.kind);
  fact(list, "where", `${t.environment}/${t.stage}`);
  fact(list, "status", t.status);
  fact(list, "title", t.title);
  fact(list, "reason", t.reason);
  fact(list, "cost", `$${money(t.cost_usd)}`);
  fact(list, "result", t.result ? `${t.result.status}: ${t.result.summary}` : "");
  fact(list, "created", when(t.created_at));
  fact(list, "finished", when(t.finished_at));
}

function drawButtons(t) {
  const ended = !ACTIVE.includes(t.status);
  document.getElementById("do-retry").hidden = !ended || t.status === "succeeded";
  document.getElementById("do-cancel").hidden = ended;
  document.getElementById("do-resume").hidden = !ended;
}

async function act(action) {
  const id = selectedTask();
  const say = document.getElementById("action-result");
  if (!id) return;
  const response = await authFetch(`/api/tasks/${id}/${action}`, { method: "POST", headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) {
    say.textContent = `${action} refused: ${body.error}`;
  } else {
    const done = body.done || [body];
    say.textContent = done.length ? done.map((d) => `${d.id.slice(0, 8)} ${d.action}: ${d.from} → ${d.status}`).join("; ") : "nothing to do";
  }
  await refreshDetail();
}

function drawAttempts(t) {
  fill("detail-attempts", t.attempts.map((a) => row([
    a.attempt, a.provider, a.model, a.transport, el("td", a.status, `s-${a.status}`), money(a.cost_usd),
    `${a.input_tokens} / ${a.output_tokens}`, a.error ? `${a.error_class}: ${a.error}` : "–", (a.tries || []).length,
  ])));
  const tries = t.attempts.flatMap((a) => (a.tries || []).map((x) => row([
    a.attempt, x.try, when(x.started_at), el("td", x.status, `s-${x.status}`),
    x.error ? `${x.error_class || ""} ${x.http_status || ""} ${x.error}` : "–",
  ])));
  fill("detail-tries", tries);
}

function drawReviews(t) {
  const box = document.getElementById("detail-reviews");
  box.replaceChildren(...t.reviews.map((r) => {
    const div = el("div", "", "review");
    div.appendChild(el("div", `${r.task_id.slice(0, 8)} round ${r.round} by ${r.reviewer}: ${r.verdict} — ${r.summary}`));
    for (const c of r.comments || []) {
      div.appendChild(el("div", `${c.file || ""}${c.line ? `:${c.line}` : ""} ${c.body || ""}`, "comment muted"));
    }
    return div;
  }));
  if (!t.reviews.length) box.appendChild(el("p", "no review in this task's chain", "muted"));
}

function drawMerges(t) {
  const box = document.getElementById("detail-merges");
  box.replaceChildren(...t.merges.map((m) => {
    const div = el("div", "", "merge");
    const check = m.check || {};
    const passed = m.check_passed === null || m.check_passed === undefined ? "not run" : m.check_passed ? "passed" : "failed";
    div.appendChild(el("div", `${m.task_id.slice(0, 8)} ${m.branch} → ${m.target}: ${m.status}` +
      `${m.merge_sha ? ` (${m.merge_sha.slice(0, 10)})` : ""} · check ${passed}` +
      `${check.command ? ` (${check.command}, exit ${check.exit_code}, ${Number(check.duration_s || 0).toFixed(1)} s)` : ""}`));
    if (check.command) div.appendChild(el("pre", `$ ${check.command}\n${check.output || "(no output)"}`, "code check-output"));
    return div;
  }));
  if (!t.merges.length) box.appendChild(el("p", "no merge in this task's chain", "muted"));
}

function drawChain(t) {
  const list = document.getElementById("detail-chain");
  list.replaceChildren(...(t.chain || []).map((c) => {
    const li = el("li", "");
    li.style.marginLeft = `${c.depth * 16}px`;
    li.append(taskLink(c.id), ` ${c.kind} `, el("span", c.status, `s-${c.status}`), ` ${c.title || ""}`);
    if (c.this) li.appendChild(el("span", " ◀", "muted"));
    return li;
  }));
  fill("detail-actions", (t.actions || []).map((a) => row([when(a.at), a.action, a.by, a.from_status, a.from_reason || ""])));
}

function drawDiff(diff) {
  document.getElementById("detail-diff-range").textContent = diff.range || "";
  const text = diff.error ? `(${diff.error})` : diff.range ? diff.diff || "(no change)" : "(no change to show)";
  document.getElementById("detail-diff").textContent = text + (diff.truncated ? "\n… (cut)" : "");
}

async function refreshDetail() {
  const id = selectedTask();
  const section = document.getElementById("task-detail");
  if (!id) {
    section.hidden = true;
    return;
  }
  const [task, diff] = await Promise.all([getJson(`/api/tasks/${id}`), getJson(`/api/tasks/${id}/diff`)]);
  drawDetailHead(task);
  drawButtons(task);
  drawAttempts(task);
  drawReviews(task);
  drawMerges(task);
  drawChain(task);
  drawDiff(diff);
  section.hidden = false;
}

// --- polling -----------------------------------------------------------------------------------------------

function showFailure(error) {
  document.getElementById("updated").textContent = `update failed: ${error.message}`;
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

async function drawBreakersOrSay() {
  try {
    drawBreakers(await getJson("/api/breakers"));
  } catch (error) {
    document.getElementById("breakers-note").textContent = `breakers unavailable: ${error.message}`;
  }
}

async function refresh() {
  try {
    const query = taskQuery();
    const [status, envs, tasks, costs, budgets] = await Promise.all([
      getJson("/api/multi-env/status"), getJson("/api/multi-env/environments"), getJson(query),
      getJson("/api/costs"), getJson("/api/budgets"),
    ]);
    drawStatus(status);
    drawEnvironments(envs);
    if (query === taskQuery()) drawTasks(tasks);
    drawCosts(costs, budgets);
    await refreshDetail();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    showFailure(error);
  }
  drawBreakersOrSay();
  drawHealth();
}

setUpFilters();
for (const action of ["retry", "cancel", "resume"]) {
  document.getElementById(`do-${action}`).addEventListener("click", () => act(action).catch(showFailure));
}
window.addEventListener("hashchange", () => {
  document.getElementById("action-result").textContent = "";
  refreshDetail().catch(showFailure);
});
document.getElementById("detail-close").addEventListener("click", (event) => {
  event.preventDefault();
  window.location.hash = "";
});
onLogin(refresh);
refresh();
setInterval(refresh, POLL_MS);
