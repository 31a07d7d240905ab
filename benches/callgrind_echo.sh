#!/usr/bin/env bash
# Where one echoed message's user-space time goes: a server under valgrind's
# callgrind, driven by loadgen, profiled over loadgen's measured window only
# (`loadgen --callgrind` zeroes the counters as the window opens and dumps
# them as it closes, so the profile covers exactly the messages counted).
#
#   benches/callgrind_echo.sh [SERVER...]   (default: bench_echo bench_fastws)
#   SIZE=65536 CONNS=16 WINDOW=4 SECS=10 benches/callgrind_echo.sh
#   MODE=connect benches/callgrind_echo.sh      (per handshake cycle instead)
#
# Prints, per server: messages, instructions per message, heap allocations
# (malloc/realloc/calloc calls) per message, and the functions with the most
# inclusive instructions. Needs `valgrind` (apt-get install valgrind) and the
# release examples (benches/run_matrix.sh builds them). The numbers are
# instructions, not time: memory traffic and the kernel are not in them.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-65536}; CONNS=${CONNS:-16}; WINDOW=${WINDOW:-4}; SECS=${SECS:-10}
MODE=${MODE:-echo}
SERVERS=("$@")
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=(bench_echo bench_fastws)
BIN=${BIN:-target/release/examples}
OUT=target/bench/callgrind
mkdir -p "$OUT"
PORT=$(( 20000 + RANDOM % 5000 ))
for server in "${SERVERS[@]}"; do
    PORT=$((PORT + 1))
    rm -f "$OUT/$server".*
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/$server.%p" \
        "$BIN/$server" "127.0.0.1:$PORT" >"$OUT/$server.log" 2>&1 &
    vpid=$!
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    if [ "$MODE" = connect ]; then
        args=(connect --workers 16)
    else
        args=(echo -c "$CONNS" -w "$WINDOW" -s "$SIZE")
        [ "$SIZE" -gt 125 ] && args+=(--binary)
    fi
    result=$(timeout $((SECS + 120)) taskset -c 1 "$BIN/loadgen" "${args[@]}" \
        --url "ws://127.0.0.1:$PORT/" -d "$SECS" --warmup 3 --server-pid "$vpid" \
        --callgrind | grep '^RESULT ' | sed 's/^RESULT //')
    kill "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    messages=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r.get("messages") or r.get("handshakes"))' "$result")
    # The dump made at the window's end (the largest part number).
    dump=$(ls -1 "$OUT/$server".*.[0-9]* 2>/dev/null | sort -t. -k3 -n | tail -n1 || true)
    [ -n "$dump" ] || dump=$(ls -1 "$OUT/$server".* | grep -v '\.log$' | head -n1)
    echo "== $server ($MODE): $messages operations in the window (profile $dump)"
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null >"$OUT/$server.inclusive.txt" || true
    callgrind_annotate "$dump" 2>/dev/null >"$OUT/$server.self.txt" || true
    python3 - "$dump" "$messages" "$OUT/$server.self.txt" <<'PY'
import re, sys
dump, messages, selfpath = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total = 0
calls = {}
fn_names = {}
current = None
with open(dump) as f:
    for line in f:
        if line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1])
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
        if m:
            kind, idx, name = m.groups()
            if name:
                fn_names[idx] = name.strip()
            if kind == "cfn":
                current = fn_names.get(idx)
            continue
        m = re.match(r"calls=(\d+)", line)
        if m and current:
            calls[current] = calls.get(current, 0) + int(m.group(1))
allocs = sum(v for k, v in calls.items() if k in ("malloc", "realloc", "calloc", "__libc_malloc", "__libc_realloc", "__libc_calloc"))
print(f"  instructions per operation: {total / max(messages, 1):,.0f}")
print(f"  heap allocations per operation (malloc/realloc/calloc calls): {allocs / max(messages, 1):.2f}")
print("  top functions by own instructions per operation:")
rows = 0
with open(selfpath) as f:
    for line in f:
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if m and rows < 14 and "PROGRAM TOTALS" not in line:
            ir = int(m.group(1).replace(",", ""))
            name = m.group(3)
            name = re.sub(r"^\S*:", "", name)[:110]
            print(f"    {ir / max(messages, 1):>10,.0f}  {m.group(2):>5}%  {name}")
            rows += 1
PY
done
