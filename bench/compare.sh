#!/usr/bin/env bash
# longrun beside its peers, in one run, on one machine and one PostgreSQL
# server: the peers' own scripts (../shared/peers/run.sh: graphile-worker,
# procrastinate, and BullMQ when Redis runs), then longrun-bench on
# PostgreSQL and on SQLite, with the same shape of work (enqueue N no-op
# jobs, drain them with 24 workers). Prints every line and the ratios.
#
#   bench/compare.sh                 N=20000, PGURL=postgres://postgres@127.0.0.1
#   N=5000 PEERS=/path/to/run.sh bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
PGURL=${PGURL:-postgres://postgres@127.0.0.1}
PEERS=${PEERS:-../shared/peers/run.sh}
out=${BENCH_OUT:-target/bench/compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB, $(uname -sr)"
cargo build --release -q -p longrun -p longrun-bench

echo "== peers ($PEERS, N=$N)"
if [ -x "$PEERS" ]; then
  # A peer that fails to start (BullMQ without Redis, say) leaves the others.
  N=$N PGURL=$PGURL "$PEERS" 2>&1 | tee "$out/peers.txt" || echo "(the peers script stopped early; comparing with what it printed)"
else
  echo "no peers script at $PEERS; longrun alone" | tee "$out/peers.txt"
fi

echo "== longrun on PostgreSQL"
psql "$PGURL/postgres" -Xqc "drop database if exists bench_longrun" -c "create database bench_longrun" >/dev/null
target/release/longrun-bench --json --store "$PGURL/bench_longrun" --operations "$N" --workers 24 \
  --scenarios health,create,create1,get,drain,drain-batch,drain-in-process | tee "$out/postgres.jsonl"
# The same drain with the largest claims a worker may ask for (maxOperations 100).
psql "$PGURL/postgres" -Xqc "drop database if exists bench_longrun" -c "create database bench_longrun" >/dev/null
target/release/longrun-bench --json --store "$PGURL/bench_longrun" --operations "$N" --workers 24 \
  --claim-batch 100 --scenarios drain-batch | sed 's/"drain-batch"/"drain-batch-100"/' | tee -a "$out/postgres.jsonl"

echo "== longrun on SQLite"
rm -f "$out"/bench.db*
target/release/longrun-bench --json --store "sqlite:$out/bench.db" --operations "$N" --workers 24 \
  --scenarios health,create,create1,get,drain,drain-batch,drain-in-process | tee "$out/sqlite.jsonl"
rm -f "$out"/bench.db*
target/release/longrun-bench --json --store "sqlite:$out/bench.db" --operations "$N" --workers 24 \
  --claim-batch 100 --scenarios drain-batch | sed 's/"drain-batch"/"drain-batch-100"/' | tee -a "$out/sqlite.jsonl"

python3 - "$out" <<'PY'
import ast, json, sys, pathlib
out = pathlib.Path(sys.argv[1])
peers = {}
for line in (out / "peers.txt").read_text().splitlines():
    line = line.strip()
    if line.startswith("{"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = ast.literal_eval(line)
        peers[row["system"]] = row
ours = {}
for store in ("postgres", "sqlite"):
    for line in (out / f"{store}.jsonl").read_text().splitlines():
        row = json.loads(line)
        ours[(store, row["scenario"])] = row
print()
print(f"{'system':<36} {'drain/s':>9} {'enqueue/s':>10}")
for name, row in peers.items():
    print(f"{name:<36} {row['process_per_s']:>9} {row['enqueue_per_s']:>10}")
drains = {"drain": "REST, 1/claim", "drain-batch": "REST, 16/claim", "drain-batch-100": "REST, 100/claim",
          "drain-in-process": "in-process"}
for store in ("postgres", "sqlite"):
    for scenario, how in drains.items():
        row = ours[(store, scenario)]
        label = f"longrun {store} ({how})"
        print(f"{label:<36} {row['ops_per_s']:>9.0f} {row['enqueue_per_s']:>10.0f}")
print()
for scenario, how in drains.items():
    pg = ours[("postgres", scenario)]["ops_per_s"]
    for name, row in peers.items():
        print(f"longrun on PostgreSQL ({how}) / {name}: {pg / row['process_per_s']:.2f}x drain")
for store in ("postgres", "sqlite"):
    health = ours[(store, "health")]["ops_per_s"]
    print(f"{store}: Get / healthz = {ours[(store, 'get')]['ops_per_s'] / health:.2f}, "
          f"creates/s (64 conns) = {ours[(store, 'create')]['ops_per_s']:.0f}, "
          f"create p50 (1 conn) = {ours[(store, 'create1')]['p50_ms']:.2f} ms")
print(f"\nraw results in {out}")
PY
