"""A minimal, fast OpenAI-compatible server for benchmarks (run in its own process).

It answers ``POST /v1/chat/completions`` with a canned reply at once, so that what a
benchmark measures is the client, not the server. The model name picks a behaviour:
``fail*`` answers 503, ``reset*`` resets the connection, ``silent*`` never answers,
``limit*`` answers 429 with ``Retry-After: 30``; anything else answers 200. A request
with ``"stream": true`` gets a chunked event stream of :data:`STREAM_TOKENS` tokens.

    python bench/fastserver.py PORT
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "pong"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()


def _reply(status: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: "
        f"{len(body)}\r\n{extra}\r\n"
    ).encode() + body


OK = _reply("200 OK", BODY)

STREAM_TOKENS = 20


def _event(delta: dict, finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


# Each event in its own HTTP chunk, all in one write: the client's parsing is measured.
STREAM = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + _event({"role": "assistant", "content": ""})
    + b"".join(_event({"content": f"t{i} "}) for i in range(STREAM_TOKENS))
    + _event({}, "stop")
    + b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)
FAIL = _reply("503 Service Unavailable", b'{"error":{"message":"unavailable"}}')
LIMIT = _reply("429 Too Many Requests", b'{"error":{"message":"slow down"}}', "retry-after: 30\r\n")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            i = body.find(b'"model":')
            model = body[i + 8 : i + 20].lstrip(b' "') if i >= 0 else b""
            if model.startswith(b"fail"):
                writer.write(FAIL)
            elif model.startswith(b"limit"):
                writer.write(LIMIT)
            elif model.startswith(b"reset"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                return
            elif model.startswith(b"silent"):
                await asyncio.sleep(3600)
            elif b'"stream":true' in body or b'"stream": true' in body:
                writer.write(STREAM)
            else:
                writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
