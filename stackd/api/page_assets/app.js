// stackd's status page: draws GET /status/events (SSE, read with fetch() so that the token can
// travel as a header), charts GET /usage/series, and sends the actions (switch, lease release,
// restart or stop a member, read its log) and reads the audit trail (GET /audit) with the token
// typed once and kept in this tab's sessionStorage. Every string from the daemon goes through textContent:
// nothing is parsed as HTML.
"use strict";

const TOKEN_KEY = "stackd.token";
const MIB_PER_GIB = 1024;
let streamAbort = null;
let lastSnapshot = null;

function $(id) {
  return document.getElementById(id);
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function stateClass(state) {
  return "state-" + String(state || "unknown").replace(/[^a-z0-9_]+/gi, "-");
}

function gib(mib) {
  if (mib === null || mib === undefined) return "?";
  return (mib / MIB_PER_GIB).toFixed(mib >= 10 * MIB_PER_GIB ? 0 : 1) + " GiB";
}

function clock(at) {
  return at ? new Date(at * 1000).toLocaleTimeString() : "";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function showTokenState() {
  $("token-state").textContent = token() ? "token set for this tab" : "no token: read-only";
}

function showResult(text, isError, isDone) {
  const out = $("action-result");
  out.textContent = text;
  out.className = isError ? "error" : isDone ? "ok" : "";
}

// ------------------------------------------------------------------ the stream

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function handleFrame(frame) {
  let type = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (type === "status" && data.length) render(JSON.parse(data.join("\n")));
}

async function follow() {
  let backoff = 500;
  for (;;) {
    streamAbort = new AbortController();
    try {
      const answer = await fetch("/status/events", {
        headers: { Accept: "text/event-stream", ...authHeaders() },
        cache: "no-store",
        signal: streamAbort.signal,
      });
      if (answer.status === 401) {
        $("connection").textContent = "the daemon needs its token to show its status: type it above";
        await waitForToken();
        continue;
      }
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      $("connection").textContent = "live";
      backoff = 500;
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      $("connection").textContent = "the stream ended; reconnecting…";
    } catch (error) {
      if (error.name !== "AbortError") {
        $("connection").textContent = "disconnected (" + error.message + "); reconnecting…";
      }
    }
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 8000);
  }
}

let tokenWaiters = [];
function waitForToken() {
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function restartStream() {
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((resolve) => resolve());
  if (streamAbort) streamAbort.abort();
}

// ------------------------------------------------------------------ drawing

const SVG_NS = "http://www.w3.org/2000/svg";
const TERMINAL = new Set(["succeeded", "failed", "rolled_back", "refused", "cancelled"]);
const drawn = {}; // section -> the JSON it was last drawn from: a section unchanged is left alone
let pendingSwitch = null; // the switch this tab asked for, followed to its end
let pickedStack = false; // the user chose in the select: keep it until a switch is sent
let lastCallAt = null;

function changed(section, value) {
  const text = JSON.stringify(value);
  if (drawn[section] === text) return false;
  drawn[section] = text;
  return true;
}

function mib(value) {
  if (value === null || value === undefined) return "?";
  return value >= MIB_PER_GIB ? gib(value) : Math.round(value) + " MiB";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function render(s) {
  lastSnapshot = s;
  renderHeader(s);
  renderStacks(s.stacks || [], s.active_stack);
  if (changed("notices", [s.notices, s.switch_in_progress])) renderNotices(s.notices || []);
  if (changed("gpu", s.gpu)) renderGpu(s.gpu || {});
  if (changed("ram", s.ram)) renderRam(s.ram);
  if (changed("members", s.members)) renderMembers(s.members || []);
  if (changed("roles", s.roles)) renderRows($("roles"), (s.roles || []).map((r) => [r.role, r.model]));
  if (changed("leases", s.leases)) renderLeases(s.leases || []);
  if (changed("switches", s.switches)) {
    renderSwitches(s.switches || []);
    loadAudit();
  }
  if (changed("calls", s.calls)) renderCalls(s.calls || []);
  followSwitch(s);
  const newest = (s.calls || [])[0];
  if (newest && newest.at !== lastCallAt) {
    lastCallAt = newest.at;
    loadSeries();
  }
}

function renderHeader(s) {
  $("active-stack").textContent = s.active_stack || "none";
  const moving = s.switch_in_progress;
  const c = s.counts || { healthy: 0, degraded: 0, idle: 0 };
  const chip = $("stack-state");
  if (moving) {
    chip.textContent = "switching";
    chip.className = "chip warn";
  } else if (!s.active_stack) {
    chip.textContent = "no stack";
    chip.className = "chip bad";
  } else {
    const degraded = c.degraded || c.no_key;
    chip.textContent = degraded ? "degraded" : "healthy";
    chip.className = "chip " + (degraded ? "warn" : "good");
  }
  const parts = [
    el("span", { className: "state-running", dataset: { count: "healthy" } }, c.healthy + " healthy"),
    el("span", { className: c.degraded ? "state-degraded" : "muted", dataset: { count: "degraded" } }, c.degraded + " degraded"),
  ];
  if (c.no_key) parts.push(el("span", { className: "state-no-key", dataset: { count: "no_key" } }, c.no_key + " without a key"));
  if (c.idle) parts.push(el("span", { className: "muted", dataset: { count: "idle" } }, c.idle + " idle"));
  $("counts").replaceChildren(...parts);
  $("switching").textContent = moving ? "switching to " + moving.stack + " (" + moving.state + ")" : "";
  $("schedule").hidden = !s.schedule;
  $("schedule").textContent = s.schedule ? "schedule: " + s.schedule : "";
}

function renderStacks(stacks, active) {
  const select = $("stack-select");
  const names = stacks.map((st) => st.name + (st.active ? "*" : "")).join("\n");
  if (select.dataset.names !== names) {
    const chosen = select.value;
    select.replaceChildren(
      ...stacks.map((st) => el("option", { value: st.name, title: st.description }, st.name + (st.active ? " (active)" : ""))),
    );
    select.dataset.names = names;
    if (pickedStack && stacks.some((st) => st.name === chosen)) select.value = chosen;
  }
  if (!pickedStack && active && select.value !== active) select.value = active;
}

// ---- notices: one line per group, folded; the first-start story folds for good once read

const READ_KEY = "stackd.read.";
const opened = new Set();

function renderNotices(notices) {
  $("notices").replaceChildren(
    ...notices.map((n) => {
      const props = { className: "notice kind-" + n.kind, dataset: { kind: n.kind, notice: n.id } };
      if (!(n.lines || []).length) return el("li", props, n.title);
      const read = localStorage.getItem(READ_KEY + n.id) !== null;
      const open = opened.has(n.id) || (n.kind === "recovery" && !read);
      const details = el(
        "details",
        open ? { open: "" } : null,
        el("summary", null, n.title),
        el("ul", null, ...(n.lines || []).map((line) => el("li", null, line))),
      );
      details.addEventListener("toggle", () => {
        if (details.open) opened.add(n.id);
        else {
          opened.delete(n.id);
          localStorage.setItem(READ_KEY + n.id, String(Date.now())); // read: stays folded
        }
      });
      return el("li", props, details);
    }),
  );
}

// ---- ledgers: bars with a legend, each segment labelled on hover (or a tap)

function segmentText(seg) {
  const lines = [seg.label + ": " + mib(seg.mib)];
  for (const m of seg.models || []) {
    const measured = m.measured_mib !== null && m.measured_mib !== undefined;
    lines.push("  " + m.name + ": " + (measured ? "measured " + mib(m.measured_mib) + " of " : "declared ") + mib(m.mib) + (measured ? " declared" : ""));
  }
  return lines.join("\n");
}

function drawBar(bar, legend, segments, total) {
  bar.classList.remove("empty");
  bar.replaceChildren(
    ...segments
      .filter((seg) => seg.mib > 0)
      .map((seg) => {
        const node = el("div", {
          className: "segment seg-" + seg.kind,
          dataset: { kind: seg.kind, mib: seg.mib, label: segmentText(seg) },
          "aria-label": segmentText(seg),
        });
        node.style.width = ((100 * seg.mib) / (total || 1)).toFixed(3) + "%";
        return node;
      }),
  );
  legend.replaceChildren(
    ...segments.map((seg) => {
      let text = seg.label + " " + mib(seg.mib);
      if (seg.declared_mib && seg.measured && seg.declared_mib !== seg.mib) text += " (measured; " + mib(seg.declared_mib) + " declared)";
      else if (seg.measured) text += " (measured)";
      return el("li", { dataset: { kind: seg.kind }, className: seg.mib ? "" : "zero" }, el("span", { className: "swatch seg-" + seg.kind }), text);
    }),
  );
}

function renderGpu(gpu) {
  const bar = $("ledger-bar");
  const ledger = gpu.bar;
  if (!ledger) {
    bar.replaceChildren();
    bar.classList.add("empty");
    $("ledger-legend").replaceChildren();
    $("gpu-name").textContent = "";
    $("gpu-note").replaceChildren(
      el("p", { className: "no-gpu", id: "no-gpu" }, gpu.devices ? "the active stack keeps no GPU ledger" : "No GPU on this machine: " + (gpu.state || "none found")),
    );
    return;
  }
  $("gpu-name").textContent = (ledger.gpu_name || "GPU") + ", " + gib(ledger.total_mib) + (ledger.simulated ? " (scripted)" : "");
  drawBar(bar, $("ledger-legend"), ledger.segments, ledger.total_mib);
  const power = (gpu.power || []).map(
    (d) => "GPU " + d.index + " " + Math.round(d.power_w) + " W" + (d.power_limit_w ? " of " + Math.round(d.power_limit_w) + " W" : "") + (d.util_pct !== null && d.util_pct !== undefined ? ", " + Math.round(d.util_pct) + "% busy" : ""),
  );
  $("gpu-note").textContent = ["headroom of the budget " + mib(ledger.headroom_mib), ...power, "source " + (gpu.source || "?")].join(" · ");
}

function renderRam(ram) {
  const bar = $("ram-bar");
  if (!ram) {
    bar.replaceChildren();
    bar.classList.add("empty");
    $("ram-legend").replaceChildren();
    $("ram-name").textContent = "";
    $("ram-note").textContent = "no RAM ledger (no active stack)";
    return;
  }
  $("ram-name").textContent = gib(ram.total_mib);
  drawBar(bar, $("ram-legend"), ram.segments, ram.total_mib);
  $("ram-note").textContent = "headroom of the budget " + mib(ram.headroom_mib);
}

function showTip(event) {
  const seg = event.target.closest(".segment");
  const tip = $("bar-tip");
  if (!seg) {
    tip.hidden = true;
    return;
  }
  const box = $("bar-tip").parentElement.getBoundingClientRect();
  tip.textContent = seg.dataset.label;
  tip.hidden = false;
  const x = Math.min(event.clientX - box.left + 12, box.width - tip.offsetWidth - 4);
  tip.style.left = Math.max(x, 0) + "px";
  tip.style.top = event.clientY - box.top + 16 + "px";
}

// ---- member cards

function memoryLine(m) {
  if (m.placement === "cloud" || !m.memory_kind) return null;
  const measured = m.measured_mib !== null && m.measured_mib !== undefined;
  const share = measured && m.memory_mib ? Math.min(m.measured_mib / m.memory_mib, 1) : 0;
  const meter = el("div", { className: "meter" + (measured && m.measured_mib > m.memory_mib ? " over" : "") }, el("div"));
  meter.firstChild.style.width = (100 * share).toFixed(1) + "%";
  return el(
    "div",
    { className: "memory", dataset: { memory: m.memory_kind } },
    el("span", null, m.memory_kind + " " + (measured ? mib(m.measured_mib) + " measured" : "not measured") + " of " + mib(m.memory_mib) + " budget"),
    meter,
  );
}

function fact(label, value, props) {
  return el("div", props || null, el("dt", null, label), el("dd", null, value === null || value === undefined ? "–" : value));
}

function memberCard(m) {
  const health = m.health ? (m.health.ok ? "probe ok " + clock(m.health.at) : m.health.error ? "probe failing: " + m.health.error : null) : null;
  const engine = m.runtime === "process" || m.runtime === "docker";
  const uptime = el("dd", { className: "uptime", dataset: { readyAt: m.ready_at || "" } }, m.ready_at ? duration(Date.now() / 1000 - m.ready_at) : "–");
  const buttons = (m.actions || []).map((action) =>
    el("button", { type: "button", dataset: { action }, onclick: () => memberAction(action, m.name) }, { restart: "restart", stop: "stop", log: "full log" }[action]),
  );
  return el(
    "article",
    { className: "card" + (m.in_stack ? "" : " not-member"), dataset: { member: m.name } },
    el(
      "div",
      { className: "card-head" },
      el("strong", null, m.name),
      el("span", { className: "chip state " + stateClass(m.state) }, m.state),
    ),
    el("div", { className: "kind muted" }, [m.runtime, m.placement, m.lifecycle === "on_demand" ? "on demand" : null, m.in_stack ? null : "not in the stack"].filter(Boolean).join(" · ")),
    m.detail ? el("div", { className: "detail " + stateClass(m.state) }, m.detail) : null,
    health ? el("div", { className: "detail muted" }, health) : null,
    engine
      ? el("dl", { className: "facts" }, fact("PID", m.pid, { dataset: { fact: "pid" } }), fact("port", m.port, { dataset: { fact: "port" } }), el("div", { dataset: { fact: "uptime" } }, el("dt", null, "uptime"), uptime), fact("restarts", m.restarts, { dataset: { fact: "restarts" } }))
      : null,
    memoryLine(m),
    m.log_tail && m.log_tail.length ? el("pre", { className: "log" }, m.log_tail.join("\n")) : null,
    buttons.length ? el("div", { className: "actions" }, ...buttons) : null,
  );
}

function renderMembers(members) {
  $("members").replaceChildren(...members.map(memberCard));
}

function tickUptimes() {
  for (const node of document.querySelectorAll(".uptime[data-ready-at]")) {
    const at = Number(node.dataset.readyAt);
    if (at) node.textContent = duration(Date.now() / 1000 - at);
  }
}

// ---- roles, leases, switches, calls

function renderRows(table, rows) {
  table.tBodies[0].replaceChildren(...rows.map((cells) => el("tr", null, ...cells.map((c) => el("td", null, c)))));
}

function renderLeases(leases) {
  const rows = leases.map((lease) =>
    el(
      "tr",
      { dataset: { lease: lease.id } },
      el("td", null, lease.id),
      el("td", null, lease.model),
      el("td", null, Math.round(lease.expires_in_s || 0) + " s"),
      el("td", null, el("button", { type: "button", className: "release", dataset: { lease: lease.id }, onclick: () => release(lease.id) }, "release")),
    ),
  );
  if (!rows.length) rows.push(el("tr", null, el("td", { className: "muted", colspan: 4 }, "no lease")));
  $("leases").tBodies[0].replaceChildren(...rows);
}

function renderSwitches(switches) {
  if (!switches.length) {
    $("switches").replaceChildren(el("li", { className: "muted" }, "no switch yet"));
    return;
  }
  $("switches").replaceChildren(
    ...switches.map((sw, index) =>
      el(
        "li",
        { dataset: { switch: sw.switch_id } },
        el("span", { className: stateClass(sw.state) }, sw.state),
        " " + (sw.from_stack || "–") + " → " + sw.stack + " " + clock(sw.started_at) + (sw.kind === "recovery" ? " (recovery)" : ""),
        sw.error ? el("div", { className: "error" }, sw.error) : null,
        !(sw.steps || []).length ? null : el(
          "details",
          index === 0 || !TERMINAL.has(sw.state) ? { open: "" } : null,
          el("summary", { className: "muted" }, sw.steps.length + (sw.steps.length === 1 ? " step" : " steps")),
          el(
            "ol",
            null,
            ...(sw.steps || []).map((step) =>
              el("li", { className: stateClass(step.state) }, step.step + ": " + step.state + (step.error ? " (" + step.error + ")" : "")),
            ),
          ),
        ),
      ),
    ),
  );
}

function renderCalls(calls) {
  if (!calls.length) {
    $("calls").replaceChildren(el("li", { className: "muted" }, "no call since the daemon started"));
    return;
  }
  $("calls").replaceChildren(
    ...calls.map((call) =>
      el(
        "li",
        null,
        el("span", { className: stateClass(call.outcome) }, call.outcome),
        " " + call.route + " " + clock(call.at),
        el(
          "ul",
          null,
          ...(call.attempts || []).map((a) =>
            el(
              "li",
              { className: stateClass(a.status) },
              a.strategy + " (" + (a.backend || "–") + ") " + a.status + (a.status === "answered" ? "" : ": " + a.reason) + (a.elapsed_ms ? " " + Math.round(a.elapsed_ms) + " ms" : ""),
            ),
          ),
        ),
      ),
    ),
  );
}

// ---- charts: the last hour per backend, from GET /usage/series, in plain SVG

const CHARTS = [
  { key: "calls", label: "calls", unit: "" },
  { key: "tokens_per_s", label: "tokens/s", unit: " tok/s" },
  { key: "latency", label: "latency p50 / p95", unit: " ms" },
  { key: "failures", label: "failures", unit: "" },
];
let seriesLoading = false;

async function loadSeries() {
  if (seriesLoading) return;
  seriesLoading = true;
  try {
    const answer = await fetch("/usage/series?window_s=3600&bucket_s=60", { headers: authHeaders(), cache: "no-store" });
    if (answer.status === 401) $("charts-note").textContent = "(the token is needed to read usage)";
    else if (answer.ok) renderCharts(await answer.json());
  } catch (error) {
    $("charts-note").textContent = "(usage not read: " + error.message + ")";
  } finally {
    seriesLoading = false;
  }
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) if (child) node.append(child);
  return node;
}

function columns(values, max, className, start, bucket, unit) {
  const width = 600 / values.length;
  return values.map((v, i) => {
    if (v === null || v === undefined || v === 0) return null;
    const h = Math.max((56 * v) / (max || 1), 2);
    const title = svg("title", null);
    title.textContent = clock(start + i * bucket) + ": " + (Math.round(v * 10) / 10) + unit;
    return svg("rect", { x: (i * width + 0.5).toFixed(1), y: (60 - h).toFixed(1), width: Math.max(width - 1, 1).toFixed(1), height: h.toFixed(1), class: className }, title);
  });
}

function chartOf(spec, data, start, bucket) {
  const peak = (values) => Math.max(0, ...values.filter((v) => v !== null && v !== undefined));
  let bars;
  let summary;
  if (spec.key === "latency") {
    const max = peak(data.p95_ms);
    bars = [...columns(data.p95_ms, max, "p95", start, bucket, " ms p95"), ...columns(data.p50_ms, max, "p50", start, bucket, " ms p50")];
    summary = "max p95 " + Math.round(max) + " ms";
  } else {
    const values = data[spec.key];
    const max = peak(values);
    bars = columns(values, max, "", start, bucket, spec.unit);
    const total = values.reduce((a, v) => a + (v || 0), 0);
    summary = spec.key === "tokens_per_s" ? "peak " + (Math.round(max * 10) / 10) + spec.unit : total + " in the hour";
  }
  return el(
    "div",
    { className: "chart", dataset: { chart: spec.key } },
    el("div", { className: "label" }, el("span", null, spec.label), el("span", { className: "summary" }, summary)),
    svg("svg", { viewBox: "0 0 600 60", preserveAspectRatio: "none", class: spec.key, role: "img", "aria-label": spec.label + ": " + summary }, ...bars.filter(Boolean)),
  );
}

function renderCharts(series) {
  const names = Object.keys(series.backends || {});
  $("charts-note").textContent = "(1 bar a minute)";
  if (!names.length) {
    $("charts").replaceChildren(el("p", { className: "muted" }, "no call in the last hour"));
    return;
  }
  $("charts").replaceChildren(
    ...names.map((name) => {
      const data = series.backends[name];
      const calls = data.calls.reduce((a, v) => a + v, 0);
      const failures = data.failures.reduce((a, v) => a + v, 0);
      const tokens = data.tokens.reduce((a, v) => a + v, 0);
      return el(
        "div",
        { className: "chart-card", dataset: { backend: name } },
        el("h3", null, name),
        el("div", { className: "totals muted" }, calls + " calls · " + tokens + " tokens · " + failures + " failures"),
        ...CHARTS.map((spec) => chartOf(spec, data, series.start, series.bucket_s)),
        el("div", { className: "axis muted" }, el("span", null, Math.round((series.buckets * series.bucket_s) / 60) + " min ago"), el("span", null, "now")),
      );
    }),
  );
}

// ---- control actions: GET /audit (admin scope), newest first; without the token or the scope
// the section says what it needs instead

const AUDIT_LIMIT = 50;
let auditLoading = false;

function auditNote(text) {
  $("audit-note").textContent = text;
  $("audit").tBodies[0].replaceChildren();
}

async function loadAudit() {
  if (!token()) {
    auditNote("(type a token with the admin scope above to see who switched, leased or changed keys)");
    return;
  }
  if (auditLoading) return;
  auditLoading = true;
  try {
    const answer = await fetch("/audit?limit=" + AUDIT_LIMIT, { headers: authHeaders(), cache: "no-store" });
    if (answer.status === 401) auditNote("(the daemon refused the token)");
    else if (answer.status === 403) auditNote("(this token's key lacks the admin scope the audit trail needs)");
    else if (!answer.ok) auditNote("(the audit trail was not read: HTTP " + answer.status + ")");
    else renderAudit((await answer.json()).entries || []);
  } catch (error) {
    auditNote("(the audit trail was not read: " + error.message + ")");
  } finally {
    auditLoading = false;
  }
}

function renderAudit(entries) {
  $("audit-note").textContent = entries.length ? "(the last " + entries.length + ")" : "(none yet)";
  $("audit").tBodies[0].replaceChildren(
    ...entries.map((e) => {
      const ok = /^2\d\d$/.test(e.outcome);
      return el(
        "tr",
        { dataset: { key: e.key, action: e.action } },
        el("td", { title: new Date(e.ts * 1000).toISOString() }, clock(e.ts)),
        el("td", null, e.key),
        el("td", null, e.action),
        el("td", null, e.target || "–"),
        el("td", null, e.peer),
        el("td", { className: ok ? "outcome-ok" : "outcome-refused" }, e.outcome),
      );
    }),
  );
}

// ---- the switch this tab sent, followed to its end

function followSwitch(s) {
  if (!pendingSwitch) return;
  const sw = (s.switches || []).find((x) => x.switch_id === pendingSwitch.id);
  const moving = s.switch_in_progress && s.switch_in_progress.switch_id === pendingSwitch.id ? s.switch_in_progress : null;
  const state = sw ? sw.state : moving ? moving.state : null;
  if (!state) return;
  const failed = ["failed", "rolled_back", "refused"].includes(state);
  showResult("switch " + pendingSwitch.id + " to " + pendingSwitch.stack + ": " + state + (sw && sw.error ? " (" + sw.error + ")" : ""), failed, !failed && TERMINAL.has(state));
  if (TERMINAL.has(state) && !s.switch_in_progress) pendingSwitch = null;
}

// ------------------------------------------------------------------ actions (need the token)

async function send(method, path, body) {
  if (!token()) {
    showResult("type the token first: actions need it", true);
    return null;
  }
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const answer = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    const value = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      showResult((answer.status === 401 ? "the daemon refused the token: " : "refused: ") + (value.message || (value.error && value.error.message) || "HTTP " + answer.status), true);
      return null;
    }
    setTimeout(loadAudit, 500);
    return value;
  } catch (error) {
    showResult("the daemon did not answer: " + error.message, true);
    return null;
  }
}

async function switchStack(event) {
  event.preventDefault();
  const stack = $("stack-select").value;
  if (!stack) return;
  const value = await send("POST", "/model-stacks/switch", { stack, wait: false });
  if (!value) return;
  pickedStack = false; // the select follows the active stack again
  pendingSwitch = { id: value.switch_id, stack };
  showResult("switch " + value.switch_id + " to " + stack + ": " + value.state, false);
  if (lastSnapshot) followSwitch(lastSnapshot);
}

async function release(leaseId) {
  const value = await send("DELETE", "/leases/" + encodeURIComponent(leaseId));
  if (value) showResult("lease " + leaseId + " of " + value.model + " released", false, true);
}

async function memberAction(action, name) {
  const path = "/members/" + encodeURIComponent(name);
  if (action === "log") {
    const value = await send("GET", path + "/logs?lines=500");
    if (!value) return;
    $("log-title").textContent = name + ": the last " + value.lines.length + " lines";
    $("log-text").textContent = value.lines.join("\n");
    $("log-dialog").showModal();
    $("log-text").scrollTop = $("log-text").scrollHeight;
    return;
  }
  showResult((action === "restart" ? "restarting " : "stopping ") + name + "…", false);
  const value = await send("POST", path + "/" + action);
  if (value) showResult(name + (action === "restart" ? " restarted" : " stopped"), false, true);
}

function init() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("token-input").value.trim();
    $("token-input").value = "";
    if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    showTokenState();
    restartStream();
    loadSeries();
    loadAudit();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    restartStream();
    loadAudit();
  });
  $("switch-form").addEventListener("submit", switchStack);
  $("stack-select").addEventListener("change", () => (pickedStack = true));
  $("log-close").addEventListener("click", () => $("log-dialog").close());
  for (const bar of [$("ledger-bar"), $("ram-bar")]) {
    bar.addEventListener("mousemove", showTip);
    bar.addEventListener("click", showTip);
    bar.addEventListener("mouseleave", () => ($("bar-tip").hidden = true));
  }
  showTokenState();
  follow();
  loadSeries();
  loadAudit();
  setInterval(tickUptimes, 1000);
  setInterval(loadSeries, 30000);
  setInterval(loadAudit, 30000);
}

document.addEventListener("DOMContentLoaded", init);
