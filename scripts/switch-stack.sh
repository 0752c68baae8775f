#!/usr/bin/env bash
# Switch, list or show model stacks through the daemon's HTTP API (curl only, no Python).
#   scripts/switch-stack.sh --list
#   scripts/switch-stack.sh --status
#   scripts/switch-stack.sh elastic-hybrid [--dry-run]
# Env: STACKD_URL (default http://127.0.0.1:8001), STACKD_TOKEN (default: the state dir's token file).
set -euo pipefail
url=${STACKD_URL:-http://127.0.0.1:8001}
state=${STACKD_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/stackd}
token=${STACKD_TOKEN:-$(cat "$state/token" 2>/dev/null || true)}
call() {
  local out code
  out=$(curl -sS -w '\n%{http_code}' "$@") || { echo "error: no stackd daemon at $url (start it with 'stackd serve')" >&2; exit 1; }
  code=${out##*$'\n'}; out=${out%$'\n'*}
  echo "$out"
  [ "$code" -lt 400 ] || exit 1
}
case "${1:-}" in
  ""|-h|--help) sed -n 2,6p "$0"; exit 0 ;;
  --list) call "$url/model-stacks" ;;
  --status) call "$url/status" ;;
  *)
    dry=false; [ "${2:-}" = "--dry-run" ] && dry=true
    call -X POST "$url/model-stacks/switch" -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' -d "{\"stack\": \"$1\", \"dry_run\": $dry}" ;;
esac
