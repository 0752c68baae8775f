"""A simulated engine process for the process runtime's tests: an HTTP server on ``--port`` that
answers ``GET /v1/models`` (and ``/health``) like an OpenAI-compatible engine, with the behaviours
real engines have that a supervisor must survive:

--ready-after S    listen at once but answer 503 until S seconds passed (llama.cpp while loading)
--listen-after S   do not even listen for S seconds (vLLM while it builds its engine)
--exit-after S     die on its own after S seconds (a crash), with --exit-code N
--exit-now         exit at once with --exit-code (a bad flag, a missing model file)
--ignore-sigterm   SIGTERM does nothing (llama.cpp's server while it streams): only SIGKILL stops it
--grandchild       fork a child that sleeps forever in the same process group (a wrapper script)
--hog-mib N        touch N MiB of memory (for RSS measurements)
--answer-after S   POST /v1/chat/completions answers "engine <pid>" after S seconds (a generation)

Run as ``python engine_sim.py --port N``. Prints one line per event to stdout (the member's log).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ready-after", type=float, default=0.0)
    p.add_argument("--listen-after", type=float, default=0.0)
    p.add_argument("--exit-after", type=float, default=None)
    p.add_argument("--exit-now", action="store_true")
    p.add_argument("--exit-code", type=int, default=1)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--grandchild", action="store_true")
    p.add_argument("--hog-mib", type=int, default=0)
    p.add_argument("--answer-after", type=float, default=0.0)
    args = p.parse_args()
    print(f"engine_sim pid {os.getpid()} port {args.port}", flush=True)
    if args.exit_now:
        print("error: cannot load model (simulated)", flush=True)
        sys.exit(args.exit_code)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
    if args.grandchild and os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(60)
    hog = bytearray(args.hog_mib * 2**20)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    started = time.monotonic()
    time.sleep(args.listen_after)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if time.monotonic() - started < args.ready_after:
                self._send(503, {"error": {"code": 503, "message": "Loading model"}})
            elif self.path in ("/v1/models", "/health"):
                self._send(200, {"object": "list", "data": [{"id": "sim", "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": "not found"})
                return
            time.sleep(args.answer_after)
            if body.get("stream"):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for delta, finish in (({"content": f"engine {os.getpid()}"}, None), ({}, "stop")):
                    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                return
            message = {"role": "assistant", "content": f"engine {os.getpid()}"}
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._send(200, {"object": "chat.completion", "choices": [choice], "usage": usage})

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: object) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 128  # callers that come at once (the default is 5)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.exit_after is not None:

        def die() -> None:
            time.sleep(args.exit_after)
            print("fatal: simulated crash", flush=True)
            os._exit(args.exit_code)

        threading.Thread(target=die, daemon=True).start()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
