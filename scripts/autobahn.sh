#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client against a squall cargo example.
#
#   scripts/autobahn.sh [--example NAME] [--report-dir DIR] [--deflate]
#
# NAME defaults to bench_echo (a pure echo server). The example must accept
# HOST:PORT as its first argument and echo every text/binary message back.
# --deflate runs the permessage-deflate cases (12.* and 13.*) against
# `bench_echo --deflate` instead of the other 301.
#
# Environment:
#   AUTOBAHN_CASES    JSON list of case patterns to run (default ["*"])
#   AUTOBAHN_EXCLUDE  JSON list of case patterns to skip (default ["12.*", "13.*"])
#   AUTOBAHN_TIMEOUT  seconds allowed for the whole wstest run (default 600;
#                     1800 with --deflate: the suite's Python client is slow
#                     at compressing its 1000-message cases)
#   AUTOBAHN_PYTHON27 Python 2.7 interpreter to use instead of searching for one
#   AUTOBAHN_FEATURES cargo features to build the example with (e.g. axum)
#
# Exit status: 0 only if at least one case ran and every case passed.
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

EXAMPLE=bench_echo
REPORT_DIR=
DEFLATE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --example)
            [ $# -ge 2 ] || { echo "autobahn: --example needs a value" >&2; exit 2; }
            EXAMPLE=$2; shift 2 ;;
        --example=*) EXAMPLE=${1#*=}; shift ;;
        --report-dir)
            [ $# -ge 2 ] || { echo "autobahn: --report-dir needs a value" >&2; exit 2; }
            REPORT_DIR=$2; shift 2 ;;
        --report-dir=*) REPORT_DIR=${1#*=}; shift ;;
        --deflate) DEFLATE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "autobahn: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/target/autobahn
mkdir -p "$WORK"
if [ "$DEFLATE" = 1 ]; then
    REPORT_DIR=${REPORT_DIR:-$WORK/report-$EXAMPLE-deflate}
else
    REPORT_DIR=${REPORT_DIR:-$WORK/report-$EXAMPLE}
fi
mkdir -p "$REPORT_DIR"
REPORT_DIR=$(cd "$REPORT_DIR" && pwd)

# The suite's 12.* and 13.* cases exercise permessage-deflate, which the
# server accepts only when asked (--deflate); the plain run leaves them out.
if [ "$DEFLATE" = 1 ]; then
    CASES=${AUTOBAHN_CASES:-'["12.*", "13.*"]'}
    EXCLUDE=${AUTOBAHN_EXCLUDE:-'[]'}
else
    CASES=${AUTOBAHN_CASES:-'["*"]'}
    EXCLUDE=${AUTOBAHN_EXCLUDE:-'["12.*", "13.*"]'}
fi
if [ "$DEFLATE" = 1 ]; then
    SUITE_TIMEOUT=${AUTOBAHN_TIMEOUT:-1800}
else
    SUITE_TIMEOUT=${AUTOBAHN_TIMEOUT:-600}
fi

command -v python3 >/dev/null 2>&1 || {
    echo "autobahn: python3 is required to read the report, and none is on PATH" >&2
    exit 1
}

# --- 1. a Python 2.7 interpreter (the suite runs on Python 2 only) ----------
is_py27() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1
}

find_python27() {
    local cand roots=()
    if command -v pyenv >/dev/null 2>&1; then
        roots+=("$(pyenv root 2>/dev/null || true)")
    fi
    roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv)
    for root in "${roots[@]}"; do
        [ -n "$root" ] || continue
        cand=$root/versions/2.7.18/bin/python
        if is_py27 "$cand"; then echo "$cand"; return 0; fi
    done
    for cand in python2.7 python2; do
        if command -v "$cand" >/dev/null 2>&1 && is_py27 "$(command -v "$cand")"; then
            # A pyenv shim may resolve to a different interpreter later; pin
            # the real executable.
            "$(command -v "$cand")" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

if [ -n "${AUTOBAHN_PYTHON27:-}" ]; then
    is_py27 "$AUTOBAHN_PYTHON27" || {
        echo "autobahn: AUTOBAHN_PYTHON27=$AUTOBAHN_PYTHON27 is not a working Python 2.7 interpreter" >&2
        exit 1
    }
    PY27=$AUTOBAHN_PYTHON27
else
    PY27=$(find_python27) || {
        echo "autobahn: no Python 2.7 interpreter found." >&2
        echo "autobahn: looked for \$(pyenv root)/versions/2.7.18/bin/python and python2.7 on PATH." >&2
        echo "autobahn: install one (e.g. 'pyenv install 2.7.18') and rerun." >&2
        exit 1
    }
fi

# --- 2. the suite's virtualenv (built once, reused afterwards) ---------------
# autobahntestsuite pins most of its dependencies exactly; the constraints
# below fix the remaining transitive ones to a set known to install and run on
# Python 2.7.18, so that a rebuild gets the same environment.
VENV=$WORK/venv
VENV_TOOL=$WORK/virtualenv-py27
SETUP_LOG=$WORK/setup.log
CONSTRAINTS=$(cat <<'EOF'
autobahntestsuite==25.10.1
autobahn==0.10.9
Twisted==19.10.0
txaio==2.1.0
wsaccel==0.6.6
ujson==2.0.3
zope.interface==4.6.0
Automat==22.10.0
attrs==21.4.0
constantly==15.1.0
hyperlink==21.0.0
idna==2.10
incremental==16.10.1
PyHamcrest==1.10.1
typing==3.10.0.0
six==1.16.0
setuptools==44.0.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
pyOpenSSL==19.1.0
service-identity==18.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
klein==17.10.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
unittest2==1.1.0
traceback2==1.4.0
linecache2==1.0.0
argparse==1.4.0
EOF
)
# The marker records what the venv was built from; any change rebuilds it.
WANT_STAMP=$(printf '%s\n%s\n' "$PY27" "$CONSTRAINTS" | cksum | cut -d' ' -f1)
STAMP_FILE=$VENV/.squall-autobahn-stamp

venv_ready() {
    [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$WANT_STAMP" ] \
        && [ -x "$VENV/bin/wstest" ]
}

setup_failed() {
    echo "autobahn: $1; the log follows ($SETUP_LOG):" >&2
    tail -n 40 "$SETUP_LOG" >&2
    exit 1
}

if ! venv_ready; then
    echo "autobahn: setting up the test suite in $VENV (first run only) ..."
    setup_start=$SECONDS
    : > "$SETUP_LOG"
    rm -rf "$VENV"
    # virtualenv 20.22 dropped Python 2 support; install an older one into a
    # private directory so nothing outside target/ is touched.
    if ! PYTHONPATH=$VENV_TOOL "$PY27" -c 'import virtualenv' >/dev/null 2>&1; then
        rm -rf "$VENV_TOOL"
        "$PY27" -m pip install --disable-pip-version-check --no-warn-script-location \
            --target "$VENV_TOOL" 'virtualenv<20.22' >>"$SETUP_LOG" 2>&1 \
            || setup_failed "installing virtualenv<20.22 for Python 2.7 failed"
    fi
    PYTHONPATH=$VENV_TOOL "$PY27" -m virtualenv --no-periodic-update -p "$PY27" "$VENV" \
        >>"$SETUP_LOG" 2>&1 || setup_failed "creating the virtualenv failed"
    printf '%s\n' "$CONSTRAINTS" > "$WORK/constraints.txt"
    "$VENV/bin/pip" install --disable-pip-version-check -c "$WORK/constraints.txt" \
        autobahntestsuite >>"$SETUP_LOG" 2>&1 \
        || setup_failed "pip install autobahntestsuite failed"
    "$VENV/bin/wstest" --autobahnversion >>"$SETUP_LOG" 2>&1 \
        || setup_failed "wstest does not start"
    echo "$WANT_STAMP" > "$STAMP_FILE"
    echo "autobahn: setup done in $((SECONDS - setup_start)) s"
fi

# --- 3. build the server under test ------------------------------------------
cargo build --release --quiet ${AUTOBAHN_FEATURES:+--features "$AUTOBAHN_FEATURES"} --example "$EXAMPLE"
SERVER_BIN=$ROOT/target/release/examples/$EXAMPLE
[ -x "$SERVER_BIN" ] || { echo "autobahn: $SERVER_BIN was not built" >&2; exit 1; }

# --- 4. start it on a free loopback port --------------------------------------
PORT=$(python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')

SERVER_LOG=$REPORT_DIR/server.log
SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Cases 9.1.6 and 9.2.6 echo 16 MiB messages. squall's default message limit
# is Tornado's 10 MiB (larger messages are closed with 1009, by design), so
# bench_echo is started with tungstenite's own 64 MiB limit for the suite;
# everything else stays at its default. AUTOBAHN_SERVER_ARGS overrides this.
if [ -z "${AUTOBAHN_SERVER_ARGS+set}" ]; then
    if [ "$EXAMPLE" = bench_echo ] || [ "$EXAMPLE" = bench_axum_echo ]; then
        AUTOBAHN_SERVER_ARGS="--max-message-size 67108864"
        if [ "$DEFLATE" = 1 ]; then
            AUTOBAHN_SERVER_ARGS="$AUTOBAHN_SERVER_ARGS --deflate"
        fi
    else
        AUTOBAHN_SERVER_ARGS=""
    fi
fi
# shellcheck disable=SC2086 # word splitting of the argument list is intended
"$SERVER_BIN" "127.0.0.1:$PORT" $AUTOBAHN_SERVER_ARGS >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

# Poll until the port accepts a TCP connection (at most ~15 s).
if ! python3 - "$PORT" "$SERVER_PID" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("server process exited before listening")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("server did not accept connections within 15 s")
EOF
then
    echo "autobahn: $EXAMPLE did not come up on 127.0.0.1:$PORT; its log ($SERVER_LOG):" >&2
    tail -n 40 "$SERVER_LOG" >&2
    exit 1
fi
echo "autobahn: $EXAMPLE listening on 127.0.0.1:$PORT"

# --- 5. run the fuzzing client -------------------------------------------------
SPEC=$REPORT_DIR/spec.json
python3 - "$SPEC" "$EXAMPLE" "$PORT" "$REPORT_DIR" "$CASES" "$EXCLUDE" <<'EOF'
import json, sys
spec_path, agent, port, outdir, cases, exclude = sys.argv[1:]
try:
    cases, exclude = json.loads(cases), json.loads(exclude)
except ValueError as e:
    sys.exit("AUTOBAHN_CASES / AUTOBAHN_EXCLUDE must be JSON lists: %s" % e)
spec = {
    "outdir": outdir,
    "servers": [{"agent": agent, "url": "ws://127.0.0.1:%s" % port}],
    "cases": cases,
    "exclude-cases": exclude,
    "exclude-agent-cases": {},
}
with open(spec_path, "w") as f:
    json.dump(spec, f, indent=2)
EOF

# Remove the previous run's index so a failed run cannot report stale results.
rm -f "$REPORT_DIR/index.json" "$REPORT_DIR/index.html"

WSTEST_LOG=$REPORT_DIR/wstest.log
echo "autobahn: running cases $CASES excluding $EXCLUDE (log: $WSTEST_LOG)"
suite_start=$SECONDS
wstest_rc=0
(cd "$WORK" && timeout "$SUITE_TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$SPEC") \
    >"$WSTEST_LOG" 2>&1 || wstest_rc=$?
echo "autobahn: wstest finished in $((SECONDS - suite_start)) s (exit status $wstest_rc)"

server_died=0
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    server_died=1
    echo "autobahn: the server exited during the run; its log ($SERVER_LOG):" >&2
    tail -n 20 "$SERVER_LOG" >&2
fi
stop_server

if [ "$wstest_rc" -ne 0 ]; then
    if [ "$wstest_rc" -eq 124 ]; then
        echo "autobahn: wstest timed out after $SUITE_TIMEOUT s" >&2
    fi
    echo "autobahn: wstest failed; the end of its log:" >&2
    tail -n 20 "$WSTEST_LOG" >&2
fi

# --- 6. read the report ------------------------------------------------------
# The counts line is printed last so that it closes the output.
echo "autobahn: HTML report: $REPORT_DIR/index.html"
report_rc=0
python3 - "$REPORT_DIR/index.json" "$EXAMPLE" <<'EOF' || report_rc=$?
import json, os, sys
from collections import Counter

path, agent = sys.argv[1], sys.argv[2]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}

if not os.path.exists(path):
    print("autobahn: no report at %s" % path)
    print("0 passed, 0 failed")
    sys.exit(1)

with open(path) as f:
    index = json.load(f)
results = index.get(agent)
if results is None and len(index) == 1:
    results = next(iter(index.values()))
results = results or {}

def case_key(case_id):
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]

passed = failed = 0
behavior, behavior_close = Counter(), Counter()
for case_id in sorted(results, key=case_key):
    r = results[case_id]
    b, bc = r.get("behavior"), r.get("behaviorClose")
    behavior[b] += 1
    behavior_close[bc] += 1
    if b in PASSING and bc in PASSING:
        passed += 1
    else:
        failed += 1
        print("FAIL %-10s behavior=%s behaviorClose=%s" % (case_id, b, bc))

def summary(counter):
    return ", ".join("%s %d" % kv for kv in sorted(counter.items(), key=lambda kv: str(kv[0]))) or "none"

print("autobahn: %d cases ran" % (passed + failed))
print("autobahn: behavior:      %s" % summary(behavior))
print("autobahn: behaviorClose: %s" % summary(behavior_close))
print("autobahn: NON-STRICT: %d, INFORMATIONAL: %d (counted as passed)" % (
    sum(1 for r in results.values() if "NON-STRICT" in (r.get("behavior"), r.get("behaviorClose"))),
    sum(1 for r in results.values() if "INFORMATIONAL" in (r.get("behavior"), r.get("behaviorClose"))),
))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed or passed == 0 else 0)
EOF

if [ "$report_rc" -ne 0 ] || [ "$wstest_rc" -ne 0 ] || [ "$server_died" -ne 0 ]; then
    exit 1
fi
