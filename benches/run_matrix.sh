#!/usr/bin/env bash
# Benchmark matrix: every echo server x every scenario, results as JSON lines,
# then BENCHMARKS.md + an SVG chart via benches/report.py.
#
#   benches/run_matrix.sh [--quick] [--out FILE.md] [--svg FILE.svg]
#                         [--results FILE.jsonl] [--servers "a b ..."]
#                         [--scenarios "a b ..."] [--rounds N]
#                         [--duration S] [--warmup S] [--idle-n N] [--cores split|shared]
#
# --rounds N repeats every scenario N times, each round running the servers
# back to back (alternating), so that a pair of servers is compared within
# rounds on a machine whose speed drifts; `benches/report.py rounds` then
# gives the per-round ratios and their median. bench_echo_metrics is squall's
# echo with the `metrics` feature and a Prometheus recorder (not in the
# default server list; name it with --servers).
#
# Full run (D=10 s, warm-up 2 s, idle N=15000) writes BENCHMARKS.md and
# benches/ratios.svg. --quick (D=2 s, warm-up 1 s, idle N=2000) is a smoke
# test and writes under target/bench/ unless --out/--svg say otherwise, so
# quick numbers never end up in the repository by accident.
#
# Servers run pinned to core 0, the load generator to core 1 (taskset). With
# --cores shared, both run on cores 0 and 1 and every server runs a
# multi-thread tokio runtime of 2 workers (BENCH_WORKERS=2): the many-core
# run. --duration/--warmup/--idle-n override D, the warm-up and idle N; with
# --rounds N, `report.py medians` also prints each server's median ratio to
# fastwebsockets over the rounds for every metric (CPU and memory too). Each
# scenario starts a fresh server process. All traffic goes to 127.0.0.1, every
# load run is bounded by -d/--warmup and by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=""
SVG=""
RESULTS=""
SERVERS_ARG=""
SCENARIOS_ARG=""
ROUNDS=1
CORES=split
D_ARG=""; WARM_ARG=""; IDLE_ARG=""
ORIG_CMD="benches/run_matrix.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT="$2"; shift ;;
        --svg) SVG="$2"; shift ;;
        --results) RESULTS="$2"; shift ;;
        --servers) SERVERS_ARG="$2"; shift ;;
        --scenarios) SCENARIOS_ARG="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --duration) D_ARG="$2"; shift ;;
        --warmup) WARM_ARG="$2"; shift ;;
        --idle-n) IDLE_ARG="$2"; shift ;;
        --cores) CORES="$2"; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    D=2; WARM=1; IDLE_N=2000
    : "${OUT:=target/bench/BENCHMARKS.quick.md}"
    : "${SVG:=target/bench/ratios.quick.svg}"
else
    D=10; WARM=2; IDLE_N=15000
    : "${OUT:=BENCHMARKS.md}"
    : "${SVG:=benches/ratios.svg}"
fi
D=${D_ARG:-$D}; WARM=${WARM_ARG:-$WARM}; IDLE_N=${IDLE_ARG:-$IDLE_N}
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p target/bench
: "${RESULTS:=target/bench/results-$STAMP.jsonl}"
LOGDIR=target/bench/logs-$STAMP
mkdir -p "$LOGDIR"

# The idle scenario needs ~N descriptors in both processes; children inherit this.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n)"
if [ "$IDLE_N" -gt $(( $(ulimit -n) - 100 )) ]; then
    IDLE_N=$(( $(ulimit -n) - 100 ))
    echo "note: idle N lowered to $IDLE_N to fit the open-file limit"
fi

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ] && [ "$CORES" = shared ]; then
    # The many-core run: servers on a 2-worker multi-thread runtime, server
    # and load generator sharing both cores.
    PIN_SERVER=(env BENCH_WORKERS=2 taskset -c 0,1)
    PIN_LOADGEN=(taskset -c 0,1)
elif command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0)
    PIN_LOADGEN=(taskset -c 1)
else
    echo "warning: taskset missing or fewer than 2 CPUs; running unpinned" >&2
    PIN_SERVER=()
    PIN_LOADGEN=()
fi

echo "building release examples..."
cargo build --release --example loadgen --example bench_tt_echo \
    --example bench_tt_combined --example bench_fastws
SERVERS=()
NOTES=()
if cargo build --release --example bench_echo >"$LOGDIR/build-bench_echo.log" 2>&1; then
    SERVERS+=(bench_echo)
else
    NOTES+=("squall bench_echo skipped: \`cargo build --release --example bench_echo\` failed (see $LOGDIR/build-bench_echo.log)")
    echo "note: squall's bench_echo does not build yet; skipping it" >&2
fi
if [ -n "$SERVERS_ARG" ] && [[ " $SERVERS_ARG " != *" bench_axum_echo "* ]]; then
    : # not asked for: skip its (separate, feature-gated) build
elif cargo build --release --features axum --example bench_axum_echo \
    >"$LOGDIR/build-bench_axum_echo.log" 2>&1; then
    SERVERS+=(bench_axum_echo)
else
    NOTES+=("squall mounted in axum skipped: \`cargo build --release --features axum --example bench_axum_echo\` failed")
fi
SERVERS+=(bench_tt_echo bench_tt_combined bench_fastws)
if [ -n "$SERVERS_ARG" ]; then
    read -r -a SERVERS <<<"$SERVERS_ARG"
fi
if [[ " ${SERVERS[*]} " == *" bench_echo_metrics "* ]]; then
    cargo build --release --features metrics --example bench_echo_metrics
fi
BIN=target/release/examples

python3 benches/report.py meta --command "$ORIG_CMD" --quick "$QUICK" \
    --duration "$D" --warmup "$WARM" --idle-n "$IDLE_N" \
    --notes "$(printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}")" >"$RESULTS"

# Server ports come from below the kernel's ephemeral range: the idle and
# connect scenarios leave thousands of client sockets on ephemeral ports,
# and a server port among them fails to bind (EADDRINUSE).
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PORT=$(( 10000 + RANDOM % (EPHEMERAL_LOW - 10000 - 200) ))

# Wait (bounded) until something accepts on 127.0.0.1:$1.
wait_port() {
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# run_one SERVER SCENARIO LOADGEN-ARGS...
run_one() {
    local server=$1 scenario=$2; shift 2
    if [ -n "$SCENARIOS_ARG" ] && [[ " $SCENARIOS_ARG " != *" $scenario "* ]]; then
        return 0
    fi
    PORT=$((PORT + 1))
    local log="$LOGDIR/$server.$scenario.r$ROUND"
    "${PIN_SERVER[@]}" "$BIN/$server" "127.0.0.1:$PORT" >"$log.server.log" 2>&1 &
    local spid=$!
    local line=""
    if wait_port "$PORT"; then
        echo "== $server / $scenario"
        # Hard bound on top of the loadgen's own timing.
        timeout $(( WARM + D + 150 )) "${PIN_LOADGEN[@]}" "$BIN/loadgen" "$@" \
            --url "ws://127.0.0.1:$PORT/" --server-pid "$spid" \
            --meta "server=$server" --meta "scenario=$scenario" --meta "round=$ROUND" --meta "cores=$CORES" \
            >"$log.loadgen.log" 2>&1 || true
        grep -v '^RESULT ' "$log.loadgen.log" || true
        line=$(grep '^RESULT ' "$log.loadgen.log" | tail -n1 | sed 's/^RESULT //' || true)
    else
        echo "== $server / $scenario: server did not start listening" >&2
    fi
    if ! kill -0 "$spid" 2>/dev/null; then
        echo "   warning: server $server exited during the run" >&2
    fi
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    if [ -z "$line" ]; then
        line="{\"server\":\"$server\",\"scenario\":\"$scenario\",\"failed\":true}"
    fi
    echo "$line" >>"$RESULTS"
}

T=(-d "$D" --warmup "$WARM")
for ROUND in $(seq 1 "$ROUNDS"); do
    [ "$ROUNDS" -gt 1 ] && echo "=== round $ROUND of $ROUNDS"
    if [ "$ROUNDS" -gt 1 ]; then
        # Alternate: each scenario runs every server back to back, in
        # reverse order every other round (no server always goes first).
        ORDER=("${SERVERS[@]}")
        if [ $((ROUND % 2)) = 0 ]; then
            ORDER=(); for ((i=${#SERVERS[@]}-1; i>=0; i--)); do ORDER+=("${SERVERS[$i]}"); done
        fi
        for server in "${ORDER[@]}"; do run_one "$server" echo_c64_w1_s32_text echo -c 64 -w 1 -s 32 "${T[@]}"; done
        for server in "${ORDER[@]}"; do run_one "$server" echo_c64_w16_s32_text echo -c 64 -w 16 -s 32 "${T[@]}"; done
        for server in "${ORDER[@]}"; do run_one "$server" echo_c16_w4_s65536_bin echo -c 16 -w 4 -s 65536 --binary "${T[@]}"; done
        for server in "${ORDER[@]}"; do run_one "$server" connect_w16 connect --workers 16 "${T[@]}"; done
        for server in "${ORDER[@]}"; do run_one "$server" idle idle -n "$IDLE_N"; done
        continue
    fi
    for server in "${SERVERS[@]}"; do
        run_one "$server" echo_c64_w1_s32_text    echo -c 64 -w 1 -s 32 "${T[@]}"
        run_one "$server" echo_c64_w16_s32_text   echo -c 64 -w 16 -s 32 "${T[@]}"
        run_one "$server" echo_c16_w4_s65536_bin  echo -c 16 -w 4 -s 65536 --binary "${T[@]}"
        run_one "$server" connect_w16             connect --workers 16 "${T[@]}"
        run_one "$server" idle                    idle -n "$IDLE_N"
    done
done

python3 benches/report.py render "$RESULTS" --out "$OUT" --svg "$SVG"
if [ "$ROUNDS" -gt 1 ]; then
    python3 benches/report.py rounds "$RESULTS"
    python3 benches/report.py medians "$RESULTS" | tee "$OUT.medians.md"
fi
echo "results: $RESULTS"
echo "report:  $OUT"
echo "chart:   $SVG"
echo "logs:    $LOGDIR"
