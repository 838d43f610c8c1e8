#!/usr/bin/env bash
# schemathesis against a fresh longrun server's /openapi.json, with a new
# seed each run and more examples than the test suite's fixed-seed run.
#   tests/schemathesis/run.sh [--max-examples 200] [other schemathesis flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/schemathesis-venv
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r tests/schemathesis/requirements.txt; }
cargo build -q --release -p longrun
dir=$(mktemp -d)
target/release/longrun serve --listen 127.0.0.1:18321 --store "sqlite:$dir/longrun.db" --max-wait 0s 2>"$dir/server.log" &
server=$!
trap 'kill $server; rm -rf "$dir"' EXIT
sleep 1
"$venv/bin/schemathesis" run http://127.0.0.1:18321/openapi.json --checks not_a_server_error --max-examples 200 "$@"
