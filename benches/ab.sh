#!/usr/bin/env bash
# Alternating A/B rounds: two echo servers, one loadgen scenario, each round
# running both back to back (the order flips every round), so that the
# machine's drift hits both alike. Prints one line per run and, per metric,
# the median of the per-round ratios A/B.
#
#   benches/ab.sh [--rounds N] [--metrics "m1 m2"] SERVER_A SERVER_B -- LOADGEN-ARGS...
#
# SERVER_* are release examples in target/release/examples (build them
# first, with the features they need). LOADGEN-ARGS as for benches/loadgen.rs
# (e.g. `echo -c 64 -w 16 -s 32 -d 3 --warmup 1`, `connect --workers 16 -d 3`,
# `idle -n 15000`). Metrics are keys of loadgen's RESULT line (default:
# msgs_per_s server_cpu_us_per_msg). Server pinned to core 0, loadgen to
# core 1, as in run_matrix.sh; all traffic to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=5
METRICS="msgs_per_s server_cpu_us_per_msg"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --metrics) METRICS=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ $# -ge 3 ] && [ "$3" = "--" ] || { sed -n '2,15p' "$0" >&2; exit 2; }
A=$1 B=$2
shift 3
BIN=target/release/examples
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PIN_SERVER=() PIN_LOADGEN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0) PIN_LOADGEN=(taskset -c 1)
fi
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PORT=$(( 10000 + RANDOM % (EPHEMERAL_LOW - 10000 - 200) ))
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

run() {  # run SERVER LOADGEN-ARGS...
    local server=$1
    shift
    PORT=$((PORT + 1))
    "${PIN_SERVER[@]}" "$BIN/$server" "127.0.0.1:$PORT" >/dev/null 2>&1 &
    local spid=$! i
    for i in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    local line
    line=$(timeout 300 "${PIN_LOADGEN[@]}" "$BIN/loadgen" "$@" --url "ws://127.0.0.1:$PORT/" \
        --server-pid "$spid" 2>/dev/null | grep '^RESULT ' | tail -n1 | sed 's/^RESULT //' || true)
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    echo "$line"
}

for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="$A $B"; else order="$B $A"; fi
    for s in $order; do
        line=$(run "$s" "$@")
        echo "{\"round\":$r,\"server\":\"$s\",\"result\":${line:-null}}" >>"$OUT"
    done
done

python3 - "$OUT" "$A" "$B" "$METRICS" <<'PY'
import json, statistics, sys
path, a, b, metrics = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rows = [json.loads(l) for l in open(path)]
by = {}
for row in rows:
    by.setdefault(row["round"], {})[row["server"]] = row["result"] or {}
print("round " + " ".join(f"{m}[{s}]" for m in metrics for s in (a, b)))
ratios = {m: [] for m in metrics}
for r in sorted(by):
    vals = []
    for m in metrics:
        va, vb = by[r].get(a, {}).get(m), by[r].get(b, {}).get(m)
        vals += [va, vb]
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb:
            ratios[m].append(va / vb)
    print(r, " ".join("-" if v is None else f"{v:.4g}" for v in vals))
for m in metrics:
    rs = ratios[m]
    if rs:
        print(f"{m}: median ratio {a}/{b} = {statistics.median(rs):.3f} "
              f"(min {min(rs):.3f}, max {max(rs):.3f}, {len(rs)} rounds)")
    else:
        print(f"{m}: no ratio (missing results)")
PY
