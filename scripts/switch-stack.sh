#!/usr/bin/env bash
# Switch, list or show model stacks through the daemon's HTTP API (needs curl and python3).
#   scripts/switch-stack.sh [--json] [--url URL] STACK [--dry-run]
#   scripts/switch-stack.sh [--json] [--url URL] --list
#   scripts/switch-stack.sh [--json] [--url URL] --status
# --json prints the daemon's answer as it came (errors go to stderr as a sentence as well).
# Exit 0 only when the switch succeeded (a dry run: when its plan is feasible); 1 when it was
# rolled back or failed, the daemon refused the request or cannot be reached; 2 on a usage error.
# Env: STACKD_URL (default http://127.0.0.1:8001), STACKD_TOKEN (default: the token file of
# STACKD_STATE_DIR, else of the daemon's state dir, else of ${XDG_STATE_HOME:-~/.local/state}/stackd).
set -euo pipefail

usage() { sed -n 2,10p "$0" | sed 's/^# \{0,1\}//'; }
usage_error() { echo "error: $1 (see --help)" >&2; exit 2; }

url=${STACKD_URL:-http://127.0.0.1:8001}
mode=switch dry=false as_json=false stack=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --list) mode=list ;;
    --status) mode=status ;;
    --dry-run) dry=true ;;
    --json) as_json=true ;;
    --url) [ $# -ge 2 ] || usage_error "--url needs a value"; url=$2; shift ;;
    --url=*) url=${1#--url=} ;;
    --) shift
        if [ $# -gt 1 ] || { [ $# -eq 1 ] && [ -n "$stack" ]; }; then usage_error "one stack at a time"; fi
        stack=${stack:-${1:-}}; break ;;
    -*) usage_error "unknown option '$1'" ;;
    *) [ -z "$stack" ] || usage_error "one stack at a time"; stack=$1 ;;
  esac
  shift
done
url=${url%/}
if [ "$mode" = switch ] && [ -z "$stack" ]; then usage_error "name a stack, or use --list or --status"; fi

# The token, in the CLI's order: $STACKD_TOKEN; the token file of $STACKD_STATE_DIR; else that of
# the state dir the daemon names in GET /healthz (open on loopback), then of the default one.
find_token() {
  token='' token_from=''
  if [ -n "${STACKD_TOKEN:-}" ]; then token=$STACKD_TOKEN token_from="\$STACKD_TOKEN"; return; fi
  local dirs=() reported dir
  if [ -n "${STACKD_STATE_DIR:-}" ]; then
    dirs=("$STACKD_STATE_DIR")
  else
    reported=$(curl -s --max-time 5 "$url/healthz" 2>/dev/null | python3 -c '
import json, sys
try:
    print(json.load(sys.stdin).get("state_dir") or "")
except (ValueError, AttributeError):
    pass' 2>/dev/null) || reported=''
    [ -z "$reported" ] || dirs+=("$reported")
    dirs+=("${XDG_STATE_HOME:-$HOME/.local/state}/stackd")
  fi
  for dir in "${dirs[@]}"; do
    if token=$(tr -d '[:space:]' 2>/dev/null <"$dir/token") && [ -n "$token" ]; then
      token_from="$dir/token"; return
    fi
  done
  token='' token_from="nowhere: set STACKD_TOKEN or STACKD_STATE_DIR (no token file in ${dirs[*]})"
}
find_token

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The token goes to curl in a file, not on its command line, where other users could read it.
if [ -n "$token" ]; then printf 'Authorization: Bearer %s\n' "$token" >"$tmp/headers"; else : >"$tmp/headers"; fi

# request METHOD PATH [BODY]: sets $code and leaves the answer in $tmp/body; exits 1 when the
# daemon cannot be reached.
request() {
  local curl_rc=0
  local args=(-sS -X "$1" -H "@$tmp/headers" -o "$tmp/body" -w '%{http_code}' --connect-timeout 5)
  [ $# -lt 3 ] || args+=(-H 'Content-Type: application/json' --data-binary @-)
  code=$(printf '%s' "${3:-}" | curl "${args[@]}" "$url$2" 2>"$tmp/curl-error") || curl_rc=$?
  case "$curl_rc" in
    0) ;;
    6|7) echo "error: no stackd daemon at $url; start it with 'stackd serve' or set STACKD_URL" >&2; exit 1 ;;
    *) echo "error: stackd at $url did not answer: $(tail -n 1 "$tmp/curl-error")" >&2; exit 1 ;;
  esac
}

# The answer's rendering and the exit status: python3's json, the same parser the daemon uses.
read -r -d '' render <<'PY' || true
import json, sys

mode, code, as_json, url, token_from = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "true", sys.argv[4], sys.argv[5]
with open(sys.argv[6], encoding="utf-8", errors="replace") as answer:
    raw = answer.read()


def fail(sentence):
    print(f"error: {sentence}", file=sys.stderr)
    sys.exit(1)


def step_text(step):
    kind = step.get("kind", "step")
    if kind in ("bind_role", "unbind_role"):
        return f"{kind} {step.get('role')}" + (f" -> {step['model']}" if step.get("model") else "")
    if kind == "roles_swapped":
        return "role table swap"
    target = step.get("tag") or step.get("container")
    return f"{kind} {step.get('model', '')}" + (f" ({target})" if target else "")


try:
    body = json.loads(raw)
except ValueError:
    body = None
if as_json and raw:
    print(raw.rstrip("\n"))
if code >= 400:
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    message = message or (raw.strip().splitlines() or ["(empty answer)"])[0][:200]
    if code == 401:
        message += f"; the token was read from {token_from}"
    fail(f"HTTP {code} from {url}: {message}")
if not isinstance(body, dict):
    fail(f"HTTP {code} from {url} is not stackd's JSON: {raw.strip()[:200] or '(empty answer)'}")

if mode == "list":
    if not as_json:
        width = max((len(s["name"]) for s in body["stacks"]), default=0)
        for s in body["stacks"]:
            mark = "*" if s.get("active") else " "
            print(f"{mark} {s['name']:<{width}}  {s.get('description') or ''}".rstrip())
elif mode == "status":
    if not as_json:
        print(f"active stack: {body.get('active_stack') or '(none)'}")
        current = body.get("switch_in_progress")
        if current:
            print(f"switching:    {current['stack']} ({current['state']}, {current['switch_id']})")
        last = body.get("last_switch")
        if last:
            print(f"last switch:  {last.get('stack')}: {last.get('state') or last.get('journal_state')}")
        for m in body.get("members", []):
            print(f"  {m['name']}: {m['state']}" + (f" ({m['detail']})" if m.get("detail") else ""))
        for item in body.get("drift", []):
            print(f"drift: {item}")
        for d in body.get("degraded", []):
            print(f"degraded: {d['model']}: {d['error']}")
elif body.get("dry_run"):
    plan = body["plan"]
    steps = plan.get("steps", [])
    if not as_json:
        verdict = "feasible" if plan.get("feasible") else "NOT feasible"
        print(f"dry run of '{plan['stack']}': {verdict}, {len(steps)} steps (nothing was changed)")
        for i, step in enumerate(steps, 1):
            print(f"  {i}. {step_text(step)}")
        if not steps:
            print("  nothing to do: the stack is already running as planned")
    if not plan.get("feasible"):
        reasons = "; ".join(r["message"] for r in plan.get("refusals", [])) or "the plan is not feasible"
        fail(f"switching to '{plan['stack']}' would be refused: {reasons}")
else:
    state, done = body.get("state"), body.get("steps_done") or []
    started, finished = body.get("started_at"), body.get("finished_at")
    took = f" in {finished - started:.1f} s" if started and finished else ""
    if not as_json:
        origin = f" (from '{body['from_stack']}')" if body.get("from_stack") else ""
        print(f"stack '{body.get('stack')}'{origin}: {state}, {len(done)} steps done{took}")
        for step in done:
            print(f"  {step_text(step)}")
        for d in body.get("degraded", []):
            print(f"degraded: {d['model']}: {d['error']}")
        if body.get("note"):
            print(f"note: {body['note']}")
    if state != "succeeded":
        why = body.get("error") or f"the switch is {state}; follow it at {url}/model-stacks/switch/{body.get('switch_id')}"
        fail(f"switch to '{body.get('stack')}' {state}: {why}")
PY

answer() { python3 -c "$render" "$mode" "$code" "$as_json" "$url" "$token_from" "$tmp/body"; }

case "$mode" in
  list) request GET /model-stacks ;;
  status) request GET /status ;;
  switch)
    body=$(python3 -c 'import json, sys; print(json.dumps({"stack": sys.argv[1], "dry_run": sys.argv[2] == "true", "wait": True}))' "$stack" "$dry")
    request POST /model-stacks/switch "$body" ;;
esac
answer
