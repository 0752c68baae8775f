"""A tiny engine that holds real GPU memory: ``scripts/gpu-check`` runs it as process members.

It needs only the NVIDIA driver (``libcuda.so.1``, through ctypes) and the standard library, so
it runs on any machine with a driver and no internet. At start it creates a CUDA context on the
chosen device and allocates ``--mib`` MiB with ``cuMemAlloc`` (and writes it once with
``cuMemsetD8``, so that the memory is backed, not only reserved), then serves what stackd
probes: ``GET /v1/models`` (the OpenAI list with ``--name``) and ``GET /health`` (200 and what
it holds). It holds the memory until it is stopped (SIGTERM): the driver frees the context when
the process ends. ``--mib 0`` creates the context only: its size is the overhead that every
CUDA process pays, which the check measures first.

    python -m stackd.sim.cuda_engine --port 8000 --mib 1024 --name gpu-a [--device 0]

A failing CUDA call exits with status 2 and the call's name and error code on stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MIB = 1024 * 1024
LIBCUDA = "libcuda.so.1"


class CudaError(RuntimeError):
    """A CUDA driver call that did not return CUDA_SUCCESS (0), or no driver at all."""


def hold_memory(mib: int, device: int = 0, library: str = LIBCUDA) -> ctypes.c_uint64:
    """Create a context on ``device`` and allocate ``mib`` MiB in it; return the device pointer
    (0 when ``mib`` is 0). The context stays current and alive until the process exits."""
    try:
        cuda = ctypes.CDLL(library)
    except OSError as exc:
        raise CudaError(f"{library} not found: this engine needs an NVIDIA driver ({exc})") from exc

    def call(name: str, *args: object) -> None:
        code = getattr(cuda, name)(*args)
        if code != 0:
            raise CudaError(f"{name} failed with CUDA error {code}")

    handle = ctypes.c_int()
    context = ctypes.c_void_p()
    pointer = ctypes.c_uint64(0)
    call("cuInit", 0)
    call("cuDeviceGet", ctypes.byref(handle), device)
    call("cuCtxCreate_v2", ctypes.byref(context), 0, handle)
    if mib > 0:
        size = ctypes.c_size_t(mib * MIB)
        call("cuMemAlloc_v2", ctypes.byref(pointer), size)
        call("cuMemsetD8_v2", pointer, ctypes.c_ubyte(0x5A), size)
        call("cuCtxSynchronize")
    return pointer


def serve(port: int, name: str, mib: int) -> None:
    models = json.dumps(
        {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "gpu-check"}]}
    )
    health = json.dumps({"status": "ok", "allocated_mib": mib, "pid": os.getpid()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {"/v1/models": models, "/health": health}.get(self.path.split("?", 1)[0])
            data = (body or json.dumps({"error": "not found"})).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # stackd keeps the member's log: one line per probe would drown it

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--mib", type=int, required=True, help="GPU memory to allocate, in MiB (0: context only)"
    )
    parser.add_argument("--name", default="cuda-engine", help="the model id /v1/models lists")
    parser.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    args = parser.parse_args(argv)
    if args.mib < 0:
        parser.error("--mib must be 0 or more")
    try:
        hold_memory(args.mib, args.device)
    except CudaError as exc:
        print(f"cuda_engine: {exc}", file=sys.stderr)
        return 2
    print(f"cuda_engine: pid {os.getpid()} holds {args.mib} MiB on device {args.device}", flush=True)
    serve(args.port, args.name, args.mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
