"""Run the fault-injecting server: ``python -m mesh_core.testing --port 8900``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .._cli import CommandError, start_fault_server
from .faults import KINDS

_EPILOG = f"""\
control API:
  POST /_control/behaviour  {{"model": "m1", "behaviour": {{...}}, "once": false}}
                            once=true: the next request only; false: every request from now on
  POST /_control/reset      forget behaviours, rate limits and recorded requests
  GET  /_control/requests   what was received

behaviour JSON (every field optional; an unknown kind or field is a 400):
  kind               {" | ".join(KINDS)}  (default ok: answer)
  status, body       kind=status: the HTTP status and JSON error body
  retry_after        seconds, sent as Retry-After
  headers            extra reply headers
  text, tool_calls   a scripted answer ([{{"name": ..., "arguments": {{...}}}}])
  delay              seconds before the headers
  first_token_delay  streams: seconds before the first token
  stall_after, stall_for   streams: pause for stall_for seconds after N chunks
  cut_after          streams: close the connection after N chunks
  malformed_after    streams: a corrupt event after N chunks
  omit_done          streams: no [DONE]
  chunk_delay        streams: seconds between chunks
  reject_prefill     400 to a request ending with an assistant message
  linger_after_done  streams: hold the body open after [DONE]
  trickle, trickle_body_only   one byte every N seconds
  raw_body, raw_events         exact bytes of a body / of a stream's events
  bomb               a gzip body inflating to N bytes
  gzip_stream        a gzip-encoded event stream
  refusal            an answer withheld (content_filter / stop_reason refusal / SAFETY)
  error_event_after  streams: an error event inside the 200 stream after N chunks

Routes (one port, every protocol): /v1/chat/completions (OpenAI),
/openai/deployments/{{deployment}}/chat/completions?api-version=... (Azure OpenAI),
/v1/messages (Anthropic), /v1beta/models/{{model}}:generateContent and
:streamGenerateContent?alt=sse (Gemini).

Requests are checked as OpenAI checks them: an unknown top-level field is a 400
("Unrecognized request argument supplied"). tool_choice "required" (or a named
function) is honoured, also after a tool result.
"""


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM; exit status 1, with one line, if the port is taken."""
    parser = argparse.ArgumentParser(
        prog="python -m mesh_core.testing",
        description="A server on 127.0.0.1 speaking the OpenAI, Azure OpenAI, Anthropic and "
        "Gemini APIs that fails on command.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8900, help="default 8900; 0 picks a free one")
    parser.add_argument("--api-key", default=None, help="require this bearer key (401 otherwise)")
    args = parser.parse_args(argv)
    try:
        server = start_fault_server(args.port, args.api_key)
    except CommandError as exc:  # a busy port is a sentence, not a traceback
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"fault server listening at {server.base_url}", flush=True)
    print(
        "control: POST /_control/behaviour {model, behaviour, once}; POST /_control/reset; "
        "GET /_control/requests",
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
