#!/usr/bin/env python3
"""ws_hold.py: opens one wss:// WebSocket, echoes one text frame, prints OK, then holds the
connection open forever without sending anything (tests/it/keepalive.rs runs it inside a
network namespace and cuts the link under it).

Usage: ws_hold.py HOST PORT SERVER_NAME. Only the standard library: TLS without verification
(the test only needs the connection, not the sidecar's identity) and a hand-written upgrade.
"""

import base64
import os
import socket
import ssl
import sys
import time

TIMEOUT = 10  # seconds for each step before the connection is held; well past a LAN round trip
MESSAGE = b"hold"


def fail(what):
    print(f"ws_hold: {what}", file=sys.stderr, flush=True)
    sys.exit(1)


def read_exact(tls, n):
    data = b""
    while len(data) < n:
        chunk = tls.recv(n - len(data))
        if not chunk:
            fail(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def main():
    host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    tls = context.wrap_socket(raw, server_hostname=name)

    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {name}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    tls.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(1)
        if not chunk:
            fail(f"connection closed during the upgrade response: {head!r}")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if status.split(b" ")[1:2] != [b"101"]:
        fail(f"upgrade refused: {status!r}")

    # One masked text frame (FIN, opcode 1), as a client must send (RFC 6455 section 5.3).
    mask = os.urandom(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(MESSAGE))
    tls.sendall(bytes([0x81, 0x80 | len(MESSAGE)]) + mask + payload)
    first, second = read_exact(tls, 2)
    if first != 0x81 or second & 0x80 or (second & 0x7F) != len(MESSAGE):
        fail(f"unexpected frame header {first:#x} {second:#x}")
    echoed = read_exact(tls, len(MESSAGE))
    if echoed != MESSAGE:
        fail(f"echo was {echoed!r}")

    print("OK", flush=True)
    # Hold the connection: no reads or writes, so only the kernel's TCP keepalive moves.
    tls.settimeout(None)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
