"""Large JSON bodies parsed, and large JSON responses encoded, in a helper process: never on the event loop.

Parsing JSON holds the GIL the whole time (about 1 s for 50 MiB here), so a thread would still stop
the event loop, health checks included; a separate process does not. The body reaches the helper as a
private temporary file (``/dev/shm`` where there is one), written by a thread: the kernel copies it
without the GIL, where pickling it through a pipe would hold the GIL for a fifth of a second. Small
bodies, and binary tensors (which need no parsing), stay inline.

The helper is ``python -c ...`` (it imports no JAX) speaking length-prefixed pickles on its stdin and
stdout, one call at a time, started with the server; a plain subprocess rather than a multiprocessing
pool, which would re-import the caller's ``__main__``. If it dies, the request answers 503 and the
next call starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import Overloaded, Unavailable
from .protocol import InferRequest, encode_response, parse_infer

log = logging.getLogger("aios_lab.serve")

JSON_BYTES_PER_VALUE = 12  # a float32 as orjson writes it, with its comma: what a JSON response costs per value
_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class Offload:
    """The helper process of one app, and how many large bodies are waiting for it."""

    def __init__(self, min_bytes: int, max_pending: int, count: Callable[[str], None] | None = None):
        self.min_bytes, self.max_pending = min_bytes, max_pending
        self.min_values = min_bytes // JSON_BYTES_PER_VALUE  # fewer output values than this: never worth it
        self.count = count  # called with "parse" or "encode" for each use (a metric)
        self.pending = 0
        self._helper = Helper()

    def wants(self, body_len: int, ihcl: str | None) -> bool:
        """Whether a body's JSON part (all of it, or the header before the binary tensors) is worth the helper."""
        if ihcl is not None:
            try:
                return int(ihcl) >= self.min_bytes
            except ValueError:
                return False  # the inline parser answers 400
        return body_len >= self.min_bytes

    def wants_encode(self, req: InferRequest, results: list[np.ndarray]) -> bool:
        """A response worth encoding in the helper: its JSON outputs come to ``min_bytes`` or more."""
        values = 0
        for k, as_binary in req.outputs:
            if not as_binary:
                values += results[k].size
        return values >= self.min_values

    async def parse(self, body: bytes | bytearray, ihcl: str | None, signature: dict, max_rows: int) -> InferRequest:
        if self.count:
            self.count("parse")
        path = await asyncio.to_thread(_to_file, body)
        try:
            return await self._call("parse", path, ihcl, signature, max_rows)
        finally:
            os.unlink(path)

    async def encode(
        self, model: str, version: str, req: InferRequest, results: list[np.ndarray], out_specs: list[dict]
    ) -> tuple[bytes, int | None]:
        if self.count:
            self.count("encode")
        light = InferRequest(req.id, [], req.rows, req.outputs)  # the inputs stay here
        return await self._call("encode", model, version, light, results, out_specs)

    async def _call(self, what: str, *args: Any) -> Any:
        if self.pending >= self.max_pending:
            raise Overloaded(
                f"{self.pending} large requests are already waiting for the parser: retry in a second, as the "
                "Retry-After header says, or send smaller requests (or binary tensors)",
                reason="parser_busy",
            )
        self.pending += 1
        try:
            return await asyncio.to_thread(self._helper.call, what, args)
        finally:
            self.pending -= 1

    def start(self) -> None:
        """Start the helper now (blocking: start-up runs it in a thread), so the first large body needn't wait."""
        self._helper.call("ready", ())

    def close(self) -> None:
        self._helper.close()


class Helper:
    """The helper process, started on first use (and again after it died); calls are serialised."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def call(self, what: str, args: tuple) -> Any:
        """Run ``what`` (parse | encode | ready) in the helper; blocking, so callers use a thread."""
        message = pickle.dumps((what, args), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", "from aios_lab.serve.offload import main; main()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            try:
                _send(self._proc.stdin, message)
                ok, value = pickle.loads(_receive(self._proc.stdout))
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                log.warning("the parsing helper process died (%s); the next call starts a new one", exc)
                self._proc.kill()
                self._proc = None
                raise Unavailable("the endpoint's parsing helper restarted: retry the request") from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.stdin.close()  # the helper exits at the end of its input
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                self._proc = None


def _send(pipe, data: bytes) -> None:
    pipe.write(len(data).to_bytes(8, "little"))
    pipe.write(data)
    pipe.flush()


def _receive(pipe) -> bytes:
    head = pipe.read(8)
    if len(head) < 8:
        raise EOFError("the helper closed its output")
    n = int.from_bytes(head, "little")
    data = pipe.read(n)
    if len(data) < n:
        raise EOFError("the helper's answer was cut short")
    return data


def _to_file(body: bytes | bytearray) -> str:
    """``body`` in a new 0600 temporary file (memory-backed where possible); returns its path."""
    fd, path = tempfile.mkstemp(prefix="aios-body-", dir=_TMP)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def _parse_file(path: str, ihcl: str | None, signature: dict, max_rows: int) -> InferRequest:
    with open(path, "rb") as f:
        body = f.read()
    return parse_infer(body, ihcl, signature, max_rows)


_CALLS: dict[str, Callable] = {"parse": _parse_file, "encode": encode_response, "ready": lambda: True}


def main() -> None:
    """The helper's loop: read a call from stdin, answer ``(ok, value or exception)`` on stdout, until EOF."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed goes to the server's log, not into the answers
    while True:
        try:
            what, args = pickle.loads(_receive(stdin))
        except EOFError:
            return
        try:
            answer = (True, _CALLS[what](*args))
        except Exception as exc:
            try:
                pickle.dumps(exc)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            answer = (False, exc)
        _send(stdout, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
