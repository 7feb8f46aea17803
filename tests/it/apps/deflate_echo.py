#!/usr/bin/python3
"""deflate_echo.py: a permessage-deflate WebSocket app (Debian's python3-websockets) that streams
compressible, self-checking text messages to each client until the client closes, and echoes
whatever the client sends (tests/it/drain_browser.rs runs it behind the sidecar, Chromium on the
other side, and drains the sidecar mid-stream).

Usage: deflate_echo.py HOST PORT (PORT 0: a free one). A request that is not an upgrade gets
PAGE, an empty page for the test's script to run in, so that the browser opens the socket from
the app's own https:// origin (through the sidecar) as a real page would. Prints `listening PORT`, then one JSON
line per event: `{"event": "open", "extensions": [...]}` when a client connects and
`{"event": "closed", "sent": N, "rcvd_code": ..., "rcvd_reason": ..., "sent_code": ...,
"rcvd_then_sent": ...}` once its connection has ended (`rcvd_*`: the Close it received; `sent`:
messages whose send completed).

Message `seq` is `"{seq} {size} {crc32:08x} "` followed by `body(seq, size)`: `size` ASCII
characters of words picked by a 32-bit LCG seeded with `seq`, so the page regenerates it
exactly (and deflate shrinks it a few times). Every third message goes out fragmented in
FRAGMENT-character frames; only its first frame carries RSV1.
"""

import asyncio
import http
import json
import sys
import zlib

import websockets

# The message sizes, in turn: some far larger than a TLS record (16 KiB) or a fragment.
SIZES = [200 * 1024, 1000, 30 * 1024, 200 * 1024, 17, 64 * 1024]
FRAGMENT = 16 * 1024
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa"]
PAGE = b'<!doctype html><title>deflate stream</title><p id="status"></p><ul id="log"></ul>'
# Between two messages: the stream keeps flowing without flooding the browser.
PAUSE = 0.01


def body(seq, size):
    """`size` characters of LCG-chosen words; drain_browser.rs has the same in JavaScript."""
    x = seq & 0xFFFFFFFF
    parts = []
    length = 0
    while length < size:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        word = WORDS[(x >> 16) & 15]
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)[:size].ljust(size, " ")


def message(seq):
    size = SIZES[seq % len(SIZES)]
    text = body(seq, size)
    return f"{seq} {size} {zlib.crc32(text.encode()):08x} {text}"


def emit(event):
    print(json.dumps(event), flush=True)


async def stream(ws, path=None):
    emit({"event": "open", "extensions": [ext.name for ext in ws.extensions],
          "offered": ws.request_headers.get("Sec-WebSocket-Extensions")})
    sent = 0
    closed = None

    async def echo():
        async for incoming in ws:
            await ws.send(incoming)

    echoing = asyncio.ensure_future(echo())
    try:
        for seq in range(1 << 31):
            text = message(seq)
            if seq % 3 == 0:
                await ws.send([text[i:i + FRAGMENT] for i in range(0, len(text), FRAGMENT)])
            else:
                await ws.send(text)
            sent += 1
            await asyncio.sleep(PAUSE)
    except websockets.ConnectionClosed as err:
        closed = err
    # The closing handshake's end: the server closes TCP once both Close frames have passed.
    await ws.wait_closed()
    echoing.cancel()
    rcvd, sent_close = (closed.rcvd, closed.sent) if closed else (None, None)
    emit({
        "event": "closed",
        "sent": sent,
        "rcvd_code": rcvd.code if rcvd else None,
        "rcvd_reason": rcvd.reason if rcvd else None,
        "sent_code": sent_close.code if sent_close else None,
        "rcvd_then_sent": closed.rcvd_then_sent if closed else None,
    })


async def page(path, headers):
    """PAGE for plain requests; None lets an upgrade through to `stream`."""
    if "upgrade" in headers.get("Connection", "").lower():
        return None
    return http.HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8")], PAGE


async def main():
    host, port = sys.argv[1], int(sys.argv[2])
    # No pings of its own: the test watches the sidecar's frames, not the library's keepalive.
    async with websockets.serve(stream, host, port, compression="deflate",
                                process_request=page, ping_interval=None, max_size=None) as server:
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
