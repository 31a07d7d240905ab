#!/usr/bin/env bash
# Interoperability with a foreign peer: Python's `websockets` client talks to
# the echo example (text, binary, fragmented and large messages, and the close
# codes of SPEC §3), twice: as it is, and with `--deflate` (the client offers
# permessage-deflate both times; only the second server accepts it).
# Installs its own venv under target/interop-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p target
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

cargo build --quiet --example echo

run_mode() {
    local flags=$1
    local port log server status=0
    port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log=target/interop-echo${flags:+-deflate}.log
    # shellcheck disable=SC2086 # $flags is empty or one flag
    RUST_LOG=warn target/debug/examples/echo "127.0.0.1:$port" $flags >"$log" 2>&1 &
    server=$!
    # Wait (bounded) until the server accepts connections.
    for _ in $(seq 1 100); do
        if "$venv/bin/python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$port" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$server" 2>/dev/null; then
            echo "the echo example exited early:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "--- echo example ${flags:-(no flags)}"
    # shellcheck disable=SC2086
    "$venv/bin/python" tests/interop/python_client.py "ws://127.0.0.1:$port/socket/" $flags || status=$?
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    if [ "$status" -ne 0 ]; then
        echo "--- echo example log" >&2
        tail -n 50 "$log" >&2
    fi
    return "$status"
}

status=0
run_mode "" || status=1
run_mode "--deflate" || status=1
exit "$status"
