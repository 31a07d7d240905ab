"""A foreign peer for squall: the Python `websockets` client (and, for frames
no well-behaved client would send, a raw socket) against the echo example.

Usage: python_client.py ws://127.0.0.1:PORT/socket/ [--deflate]

The client offers permessage-deflate (websockets does by default);
`--deflate` says the server accepts it (the echo example's `--deflate`),
so the checks run compressed, and one check asserts the agreement either way.

Each check prints `ok` or `FAIL`; the last line is `N passed, N failed` and
the exit status is non-zero on any failure.
"""

import base64
import os
import socket
import struct
import sys
import traceback
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

TIMEOUT = 10
MAX_MESSAGE = 10 * 1024 * 1024  # squall's default max_message_size

URL = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8888/socket/"
DEFLATE = "--deflate" in sys.argv[2:]
CHECKS = []


def check(function):
    CHECKS.append(function)
    return function


def client(**kwargs):
    kwargs.setdefault("max_size", 16 * 1024 * 1024)
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    return connect(URL, **kwargs)


def expect(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def server_close_code(ws):
    """Reads until the server closes; returns its close code."""
    try:
        while True:
            ws.recv(timeout=TIMEOUT)
    except ConnectionClosed:
        pass
    return ws.close_code


# --- through the websockets client -----------------------------------------


@check
def text_echo():
    with client() as ws:
        ws.send("hello world")
        expect(ws.recv(timeout=TIMEOUT), "You said: hello world", "text echo")
        ws.send("héllo wörld ☃")
        expect(ws.recv(timeout=TIMEOUT), "You said: héllo wörld ☃", "non-ASCII echo")


@check
def binary_echo():
    data = bytes(range(256)) * 4
    with client() as ws:
        ws.send(data)
        reply = ws.recv(timeout=TIMEOUT)
        expect(type(reply), bytes, "binary reply type")
        expect(reply, data, "binary echo")


@check
def fragmented_text_is_reassembled():
    with client() as ws:
        # An iterable is sent as one message in several frames.
        ws.send(["hel", "lo ", "wor", "ld"])
        expect(ws.recv(timeout=TIMEOUT), "You said: hello world", "fragmented echo")


@check
def fragmented_binary_is_reassembled():
    parts = [os.urandom(1000) for _ in range(5)]
    with client() as ws:
        ws.send(parts)
        expect(ws.recv(timeout=TIMEOUT), b"".join(parts), "fragmented binary echo")


@check
def large_binary_echo():
    data = os.urandom(1024 * 1024)
    with client() as ws:
        ws.send(data)
        expect(ws.recv(timeout=TIMEOUT), data, "1 MiB echo")


@check
def many_messages_in_order():
    with client() as ws:
        for i in range(200):
            ws.send(f"m{i}")
        for i in range(200):
            expect(ws.recv(timeout=TIMEOUT), f"You said: m{i}", f"message {i}")


@check
def compression_is_agreed_as_the_server_says():
    with client() as ws:
        names = [extension.name for extension in ws.protocol.extensions]
        expect(names, ["permessage-deflate"] if DEFLATE else [], "extensions agreed")
        doc = '{"user": "ada", "text": "hello world", "n": 12345}' * 1500
        ws.send(doc)
        expect(ws.recv(timeout=TIMEOUT), "You said: " + doc, "large JSON echo")


@check
def ping_is_answered():
    with client() as ws:
        pong = ws.ping(b"squall?")
        if not pong.wait(TIMEOUT):
            raise AssertionError("no pong")


@check
def too_large_message_closes_1009():
    with client() as ws:
        try:
            ws.send(b"x" * (MAX_MESSAGE + 1))
        except ConnectionClosed:
            pass
        expect(server_close_code(ws), 1009, "close code for a message over 10 MiB")


@check
def normal_close_1000():
    with client() as ws:
        ws.send("bye")
        expect(ws.recv(timeout=TIMEOUT), "You said: bye", "echo before close")
        ws.close(1000, "done")
        expect(ws.close_code, 1000, "close code echoed by the server")


# --- through a raw socket: frames websockets would never send ---------------


def raw_connect():
    url = urlsplit(URL)
    sock = socket.create_connection((url.hostname, url.port or 80), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {url.path or '/'} HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("connection closed during the handshake")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"handshake refused: {status!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    return sock, rest


def frame(opcode, payload, fin=True, rsv=0, masked=True):
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_close_code(sock, buffered):
    """Reads server frames until a close frame; returns its code (None if
    the connection ended without one)."""
    data = buffered
    while True:
        while len(data) >= 2:
            opcode = data[0] & 0x0F
            length = data[1] & 0x7F
            offset = 2
            if length == 126:
                if len(data) < 4:
                    break
                length = struct.unpack("!H", data[2:4])[0]
                offset = 4
            elif length == 127:
                if len(data) < 10:
                    break
                length = struct.unpack("!Q", data[2:10])[0]
                offset = 10
            if len(data) < offset + length:
                break
            payload = data[offset : offset + length]
            data = data[offset + length :]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk


def raw_case(frames, expected, what):
    sock, buffered = raw_connect()
    try:
        for f in frames:
            sock.sendall(f)
        expect(raw_close_code(sock, buffered), expected, what)
    finally:
        sock.close()


@check
def invalid_utf8_closes_1007():
    raw_case([frame(0x1, b"ok \xff\xfe")], 1007, "invalid UTF-8 text")


@check
def invalid_utf8_across_fragments_closes_1007():
    raw_case(
        [frame(0x1, b"caf\xc3", fin=False), frame(0x0, b"\x28", fin=True)],
        1007,
        "invalid UTF-8 split over fragments",
    )


@check
def unmasked_frame_closes_1002():
    raw_case([frame(0x1, b"hello", masked=False)], 1002, "unmasked client frame")


@check
def reserved_bit_closes_1002():
    raw_case([frame(0x1, b"hello", rsv=0b100)], 1002, "RSV1 without an extension")


@check
def bad_opcode_closes_1002():
    raw_case([frame(0x3, b"hello")], 1002, "reserved opcode")


@check
def fragmented_control_frame_closes_1002():
    raw_case([frame(0x9, b"ping", fin=False)], 1002, "fragmented ping")


@check
def long_control_frame_closes_1002():
    raw_case([frame(0x9, b"p" * 126)], 1002, "126-byte ping")


def main():
    passed = failed = 0
    for function in CHECKS:
        try:
            function()
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL {function.__name__}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {function.__name__}")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
