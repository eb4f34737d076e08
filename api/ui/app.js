// The built-in web UI: plain JavaScript, no build step. Every datum comes from the public API
// under the caller's credentials (a token kept in sessionStorage when the server asks for one);
// everything shown is set as text, never as HTML. Live updates: a workflow's timeline parks on
// the history long poll (one request per open page); lists refresh every few seconds only
// while the tab is visible.
"use strict";

const CP = { "X-Durable-Workflow-Control-Plane-Version": "2" };
const TERMINAL = new Set(["completed", "failed", "cancelled", "terminated", "timed_out", "continued"]);
const CLOSING = new Set(["WorkflowCompleted", "WorkflowFailed", "WorkflowTimedOut", "WorkflowCancelled",
  "WorkflowTerminated", "WorkflowContinuedAsNew"]);
let generation = 0; // bumps on every navigation: loops of an older page stop

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function flash(message, ok = false) {
  const box = document.getElementById("flash");
  box.textContent = message || "";
  box.className = ok ? "ok" : "";
}

function namespace() { return document.getElementById("namespace").value.trim() || "default"; }

async function api(method, path, body, signal) {
  const headers = { ...CP, "X-Namespace": namespace() };
  const token = sessionStorage.getItem("dw-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    throw new Error(response.status === 401 ? "The server wants credentials: press Token and paste an operator token."
      : "These credentials may not read this (an operator or admin token is needed).");
  }
  if (!response.ok) {
    const reason = data.reason ? ` (${data.reason})` : "";
    throw new Error(`${data.message || response.statusText}${reason}`);
  }
  return data;
}

function statusBadge(status) { return el("span", { class: `status status-${status}` }, status); }
function enc(value) { return encodeURIComponent(value); }
function visibleLoop(seconds, step) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    if (document.visibilityState === "visible") await step().catch((e) => flash(e.message));
    setTimeout(tick, seconds * 1000);
  };
  setTimeout(tick, seconds * 1000);
}

// --- workflows list --------------------------------------------------------------------------

function workflowsPage(view, params) {
  const query = el("input", { type: "search", id: "filter", placeholder: 'Filter: WorkflowType = "order" AND Status = "running", or free text', value: params.get("q") || "" });
  const status = el("select", { id: "status" }, ["", "running", "completed", "failed"].map((s) => el("option", { value: s }, s || "any status")));
  status.value = params.get("status") || "";
  const body = el("tbody");
  const more = el("button", { type: "button", id: "more", hidden: "" }, "Next page");
  const tokens = [];
  const load = async (token) => {
    const args = new URLSearchParams({ page_size: "50" });
    if (query.value.trim()) args.set("query", query.value.trim());
    if (status.value) args.set("status", status.value);
    if (token) args.set("next_page_token", token);
    const data = await api("GET", `/api/workflows?${args}`);
    if (!token) body.replaceChildren();
    for (const w of data.workflows || []) {
      body.append(el("tr", { "data-workflow": w.workflow_id },
        el("td", {}, el("a", { href: `#/workflow/${enc(w.workflow_id)}` }, w.workflow_id)),
        el("td", {}, w.workflow_type), el("td", {}, statusBadge(w.status)), el("td", {}, w.task_queue || ""),
        el("td", {}, w.started_at || ""), el("td", {}, w.closed_at || "")));
    }
    more.hidden = !data.next_page_token;
    tokens.length = 0;
    if (data.next_page_token) tokens.push(data.next_page_token);
  };
  const apply = (event) => {
    event.preventDefault();
    const args = new URLSearchParams();
    if (query.value.trim()) args.set("q", query.value.trim());
    if (status.value) args.set("status", status.value);
    location.hash = `#/?${args}`;
  };
  more.addEventListener("click", () => load(tokens[0]).catch((e) => flash(e.message)));
  view.append(
    el("form", { class: "toolbar", onsubmit: apply }, query, status, el("button", { type: "submit", id: "apply" }, "Filter")),
    el("table", { id: "workflows" }, el("thead", {}, el("tr", {}, ["Workflow id", "Type", "Status", "Task queue", "Started", "Closed"].map((h) => el("th", {}, h)))), body),
    more);
  load().catch((e) => flash(e.message));
  visibleLoop(5, () => (more.hidden ? load() : Promise.resolve()));  // only the first page refreshes on its own
}

// --- one workflow ----------------------------------------------------------------------------

function summary(event) {
  const p = event.payload || {};
  const keys = ["activity_type", "signal_name", "update_name", "child_workflow_type", "delay_seconds", "timer_id",
    "condition_key", "message", "reason", "stream_name", "attempt_number"];
  const parts = keys.filter((k) => p[k] !== undefined && p[k] !== null).map((k) => `${k}: ${text(p[k])}`);
  return parts.join("  ");
}

function pendingOf(events) {
  const activities = new Map(), timers = new Map();
  for (const e of events) {
    const p = e.payload || {};
    if (e.event_type === "ActivityScheduled") activities.set(p.sequence, p.activity_type);
    if (["ActivityCompleted", "ActivityFailed", "ActivityTimedOut", "ActivityCancelled"].includes(e.event_type)) activities.delete(p.sequence);
    if (e.event_type === "TimerScheduled") timers.set(p.sequence, p.fire_at || `${p.delay_seconds}s`);
    if (["TimerFired", "TimerCancelled"].includes(e.event_type)) timers.delete(p.sequence);
  }
  return { activities, timers };
}

function workflowPage(view, workflowId) {
  const mine = generation;
  const facts = el("dl", { class: "grid", id: "facts" });
  const timeline = el("ol", { class: "timeline", id: "timeline" });
  const pendingActs = el("ul", { id: "pending-activities" }), pendingTimers = el("ul", { id: "pending-timers" });
  const live = el("span", { class: "live", id: "live" });
  const signalName = el("input", { id: "signal-name", placeholder: "signal name" });
  const signalInput = el("input", { id: "signal-input", placeholder: 'input (JSON list), e.g. ["ops"]', size: "30" });
  const events = [];
  let described = null;

  const describe = async () => {
    described = await api("GET", `/api/workflows/${enc(workflowId)}`);
    facts.replaceChildren(...["workflow_id", "run_id", "workflow_type", "status", "task_queue", "started_at", "closed_at",
      "input", "output", "memo"].flatMap((k) => [el("dt", {}, k), el("dd", { "data-field": k }, k === "status" ? statusBadge(described[k]) : text(described[k]))]));
  };
  const command = async (verb, body, confirmText) => {
    if (confirmText && !window.confirm(confirmText)) return;
    try {
      await api("POST", `/api/workflows/${enc(workflowId)}/${verb}`, body);
      flash(`${verb.split("/")[0]} sent`, true);
      await describe();
    } catch (e) { flash(e.message); }
  };
  const sendSignal = (event) => {
    event.preventDefault();
    let input = [];
    try { input = signalInput.value.trim() ? JSON.parse(signalInput.value) : []; } catch (e) { flash(`input is not JSON: ${e.message}`); return; }
    command(`signal/${enc(signalName.value.trim())}`, { input: Array.isArray(input) ? input : [input] });
  };
  const showEvents = (page) => {
    for (const e of page) {
      const kind = CLOSING.has(e.event_type) ? (e.event_type === "WorkflowCompleted" ? "closing" : "failing") : "";
      timeline.append(el("li", { class: kind, "data-event": e.event_type }, el("span", {}, e.sequence), el("span", {}, e.timestamp || ""),
        el("strong", {}, e.event_type), el("span", { class: "detail" }, summary(e))));
    }
    events.push(...page);
    const { activities, timers } = pendingOf(events);
    const none = () => el("li", { class: "none" }, "none");
    pendingActs.replaceChildren(...([...activities].map(([seq, type]) => el("li", {}, `#${seq} ${type}`)) || []));
    pendingTimers.replaceChildren(...[...timers].map(([seq, at]) => el("li", {}, `#${seq} fires ${at}`)));
    if (!activities.size) pendingActs.replaceChildren(none());
    if (!timers.size) pendingTimers.replaceChildren(none());
  };
  const follow = async () => {
    // The history long poll: the request parks until the run's next event (no polling storm).
    const runPath = `/api/workflows/${enc(workflowId)}/runs/${enc(described.run_id)}/history`;
    while (mine === generation) {
      const args = new URLSearchParams({ page_size: "1000" });
      if (events.length) { args.set("next_page_token", btoa(String(events.length))); args.set("wait_new_event", "1"); }
      live.textContent = events.length ? "live" : "";
      const page = await api("GET", `${runPath}?${args}`);
      if (mine !== generation) return;
      showEvents(page.events || []);
      if (events.length && CLOSING.has(events[events.length - 1].event_type)) { live.textContent = ""; await describe(); return; }
      if (!(page.events || []).length) {
        await describe();
        if (TERMINAL.has(described.status)) { live.textContent = ""; return; }
      } else if (page.events.some((e) => e.event_type !== "WorkflowStarted")) {
        await describe();
      }
    }
  };
  view.append(
    el("h2", {}, workflowId),
    facts,
    el("div", { class: "toolbar" },
      el("form", { class: "toolbar", onsubmit: sendSignal, id: "signal-form" }, signalName, signalInput, el("button", { type: "submit", id: "send-signal" }, "Signal")),
      el("button", { type: "button", id: "cancel", class: "danger", onclick: () => command("cancel", {}, `Cancel ${workflowId}?`) }, "Cancel"),
      el("button", { type: "button", id: "terminate", class: "danger", onclick: () => command("terminate", { reason: "terminated from the UI" }, `Terminate ${workflowId}?`) }, "Terminate")),
    el("div", { class: "panels" },
      el("div", { class: "panel" }, el("h3", {}, "Pending activities"), pendingActs),
      el("div", { class: "panel" }, el("h3", {}, "Pending timers"), pendingTimers)),
    el("h3", {}, "History ", live),
    timeline);
  describe().then(follow).catch((e) => flash(e.message));
}

// --- schedules, task queues, cluster ---------------------------------------------------------

function tablePage(view, id, headers, load) {
  const body = el("tbody");
  view.append(el("table", { id }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), body));
  const refresh = async () => body.replaceChildren(...(await load()).map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c instanceof Node ? c : text(c))))));
  refresh().catch((e) => flash(e.message));
  visibleLoop(10, refresh);
}

function schedulesPage(view) {
  tablePage(view, "schedules", ["Schedule", "Workflow type", "Status", "Next fire", "Last fired"], async () =>
    ((await api("GET", "/api/schedules")).schedules || []).map((s) => [s.schedule_id, s.workflow_type, statusBadge(s.status), s.next_fire_at, s.last_fired_at]));
}

function taskQueuesPage(view) {
  tablePage(view, "task-queues", ["Task queue", "Backlog", "Oldest ready task", "Pollers"], async () => {
    const queues = (await api("GET", "/api/task-queues")).task_queues || [];
    const described = await Promise.all(queues.map((q) => api("GET", `/api/task-queues/${enc(q.name)}`).catch(() => ({}))));
    return queues.map((q, i) => [q.name, (q.stats || {}).approximate_backlog_count, (q.stats || {}).approximate_backlog_age,
      ((described[i] || {}).pollers || []).map((p) => p.worker_id).join(", ")]);
  });
}

function clusterPage(view) {
  tablePage(view, "nodes", ["Node", "Status", "Shards owned", "URL"], async () => {
    const info = await api("GET", "/api/cluster/info");
    const nodes = (info.cluster || {}).nodes || [];
    if (!nodes.length) return [[info.server_id || "this node", "active", "all (single node)", location.origin]];
    return nodes.map((n) => [n.node_id, n.status, n.shards_owned, n.url || n.advertise_url]);
  });
}

// --- routing ---------------------------------------------------------------------------------

function route() {
  generation += 1;
  flash("");
  const view = document.getElementById("view");
  view.replaceChildren();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "workflows";
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === (section === "workflow" ? "workflows" : section));
  if (section === "workflow" && parts[1]) workflowPage(view, decodeURIComponent(parts[1]));
  else if (section === "schedules") schedulesPage(view);
  else if (section === "task-queues") taskQueuesPage(view);
  else if (section === "cluster") clusterPage(view);
  else workflowsPage(view, params);
}

document.addEventListener("DOMContentLoaded", () => {
  const ns = document.getElementById("namespace");
  ns.value = sessionStorage.getItem("dw-namespace") || "default";
  ns.addEventListener("change", () => { sessionStorage.setItem("dw-namespace", ns.value.trim()); route(); });
  document.getElementById("auth").addEventListener("click", () => {
    const token = window.prompt("Operator token (kept for this tab only):", "");
    if (token !== null) { if (token) sessionStorage.setItem("dw-token", token); else sessionStorage.removeItem("dw-token"); route(); }
  });
  window.addEventListener("hashchange", route);
  route();
});
