// stackd's status page: draws GET /status/events (SSE, read with fetch() so that the token can
// travel as a header) and sends the two actions (switch, lease release) with the token typed once
// and kept in this tab's sessionStorage. Every string from the daemon goes through textContent:
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

function showResult(text, isError) {
  const out = $("action-result");
  out.textContent = text;
  out.className = isError ? "error" : "";
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

function render(s) {
  lastSnapshot = s;
  $("active-stack").textContent = s.active_stack || "none";
  const moving = s.switch_in_progress;
  $("switching").textContent = moving ? "switching to " + moving.stack + " (" + moving.state + ")" : "";
  renderStacks(s.stacks || []);
  renderLedger(s.gpu || {});
  renderMembers(s);
  renderRows($("roles"), (s.roles || []).map((r) => [r.role, r.model]));
  renderLeases(s.leases || []);
  renderSwitches(s.switches || []);
  renderCalls(s.calls || []);
}

function renderStacks(stacks) {
  const select = $("stack-select");
  const names = stacks.map((st) => st.name).join("\n");
  if (select.dataset.names === names) return; // keep what the user picked
  const chosen = select.value;
  select.replaceChildren(
    ...stacks.map((st) => el("option", { value: st.name, title: st.description }, st.name + (st.active ? " (active)" : ""))),
  );
  select.dataset.names = names;
  if (chosen && stacks.some((st) => st.name === chosen)) select.value = chosen;
}

function renderLedger(gpu) {
  const bar = $("ledger-bar");
  const legend = $("ledger-legend");
  const ledger = gpu.bar;
  if (!ledger) {
    bar.replaceChildren();
    legend.replaceChildren();
    $("gpu-name").textContent = "";
    $("gpu-note").textContent = "no GPU ledger: " + (gpu.state || "no GPU") + " (the active stack has no GPU budget)";
    return;
  }
  $("gpu-name").textContent = (ledger.gpu_name || "GPU") + ", " + gib(ledger.total_mib) + (ledger.simulated ? " (scripted)" : "");
  const total = ledger.total_mib || 1;
  bar.replaceChildren(
    ...ledger.segments
      .filter((seg) => seg.mib > 0)
      .map((seg) => {
        const node = el("div", {
          className: "segment seg-" + seg.kind,
          dataset: { kind: seg.kind, mib: seg.mib },
          title: seg.label + ": " + gib(seg.mib) + (seg.models.length ? " (" + seg.models.map((m) => m.name).join(", ") + ")" : ""),
        });
        node.style.width = ((100 * seg.mib) / total).toFixed(3) + "%";
        return node;
      }),
  );
  legend.replaceChildren(
    ...ledger.segments.map((seg) =>
      el(
        "li",
        { dataset: { kind: seg.kind } },
        el("span", { className: "swatch seg-" + seg.kind }),
        seg.label + " " + gib(seg.mib) + (seg.measured ? " (measured)" : ""),
      ),
    ),
  );
  $("gpu-note").textContent =
    "headroom of the budget: " + gib(ledger.headroom_mib) + "; source: " + (gpu.source || "?");
}

function renderRows(table, rows) {
  table.tBodies[0].replaceChildren(...rows.map((cells) => el("tr", null, ...cells.map((c) => el("td", null, c)))));
}

function renderMembers(s) {
  const rows = (s.members || []).map((m) => {
    const health = m.health ? (m.health.ok ? "ok " + clock(m.health.at) : "failing: " + (m.health.error || "")) : "–";
    const measured = m.measured_mib !== null && m.measured_mib !== undefined ? " (measured " + gib(m.measured_mib) + ")" : "";
    const memory = m.placement === "cloud" ? "–" : gib(m.memory_mib) + measured;
    return el(
      "tr",
      { dataset: { member: m.name } },
      el("td", null, m.name + (m.in_stack ? "" : " (not in the stack)")),
      el("td", null, m.runtime),
      el("td", null, m.placement + (m.lifecycle === "on_demand" ? ", on demand" : "")),
      el("td", { className: stateClass(m.state) }, m.state + (m.detail ? ": " + m.detail : "")),
      el("td", null, health),
      el("td", null, memory),
      el("td", null, el("pre", { className: "log" }, (m.log_tail || []).join("\n"))),
    );
  });
  $("members").tBodies[0].replaceChildren(...rows);
  const notices = [
    ...(s.drift || []).map((d) => "drift: " + d),
    ...(s.degraded || []).map((d) => "degraded: " + d.model + ": " + d.error),
    ...(s.recovery ? ["recovery: " + s.recovery] : []),
  ];
  $("notices").replaceChildren(...notices.map((n) => el("li", null, n)));
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
  $("leases").tBodies[0].replaceChildren(...rows);
}

function renderSwitches(switches) {
  if (!switches.length) {
    $("switches").replaceChildren(el("li", { className: "muted" }, "no switch yet"));
    return;
  }
  $("switches").replaceChildren(
    ...switches.map((sw) =>
      el(
        "li",
        { dataset: { switch: sw.switch_id } },
        el("span", { className: stateClass(sw.state) }, sw.state),
        " " + (sw.from_stack || "–") + " → " + sw.stack + " " + clock(sw.started_at) + (sw.kind === "recovery" ? " (recovery)" : ""),
        sw.error ? el("div", { className: "error" }, sw.error) : null,
        el(
          "ol",
          null,
          ...(sw.steps || []).map((step) =>
            el("li", { className: stateClass(step.state) }, step.step + ": " + step.state + (step.error ? " (" + step.error + ")" : "")),
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

// ------------------------------------------------------------------ actions (need the token)

async function send(method, path, body) {
  if (!token()) {
    showResult("type the token first: switching and releasing need it", true);
    return null;
  }
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const answer = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    const value = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      showResult((answer.status === 401 ? "the daemon refused the token: " : "refused: ") + (value.message || "HTTP " + answer.status), true);
      return null;
    }
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
  if (value) showResult("switch " + value.switch_id + " to " + stack + ": " + value.state, false);
}

async function release(leaseId) {
  const value = await send("DELETE", "/leases/" + encodeURIComponent(leaseId));
  if (value) showResult("lease " + leaseId + " of " + value.model + " released", false);
}

function init() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("token-input").value.trim();
    $("token-input").value = "";
    if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    showTokenState();
    restartStream();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    restartStream();
  });
  $("switch-form").addEventListener("submit", switchStack);
  showTokenState();
  follow();
}

document.addEventListener("DOMContentLoaded", init);
