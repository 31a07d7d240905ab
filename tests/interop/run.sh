#!/usr/bin/env bash
# Interoperability with a foreign peer: Python's `websockets` client talks to
# the echo example (text, binary, fragmented and large messages, and the close
# codes of SPEC §3). Installs its own venv under target/interop-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p target
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

cargo build --quiet --example echo

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/interop-echo.log
RUST_LOG=warn cargo run --quiet --example echo -- "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

# Wait (bounded) until the server accepts connections.
for _ in $(seq 1 100); do
    if "$venv/bin/python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$port" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the echo example exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done

status=0
"$venv/bin/python" tests/interop/python_client.py "ws://127.0.0.1:$port/socket/" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- echo example log" >&2
    tail -n 50 "$log" >&2
fi
exit "$status"
