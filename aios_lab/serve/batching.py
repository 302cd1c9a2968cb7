"""Dynamic batching for one model version.

Requests submit their rows and await a future. The first submit schedules one run of the batch on
the event loop (``call_soon``), so everything that arrived in the same loop turn rides along. The run
then gives the loop one spare turn (a zero-timeout poll, a few microseconds): requests whose bytes
were read in that poll run their handlers before the batch starts and join it, which roughly doubles
the batch size under concurrent load, while a lone request pays only that one turn. When other
requests for this model have been accepted but not yet submitted (``arriving``), the run yields more
loop turns, at most ``max_queue_delay`` seconds, to let them join.

Batches are padded to bucket sizes (powers of two from 2 up to ``max_batch_size``) that were compiled by
:meth:`Batcher.warm_up`, so no request pays for a compile; a request larger than the largest
bucket runs in bucket-sized chunks, always in a worker thread so that the event loop (health checks,
other clients) never waits for it. A fast forward pass runs on the event loop thread (with JAX's CPU
async dispatch off that is the fastest place for it); a slow one (over ``offload_after`` at the largest
bucket, measured at warm-up) runs in one worker thread while the loop gathers the next batch, unless
it already keeps every core busy (XLA on CPU spreads a large batch over all cores): then a thread
only splits the clients into two half-size batches that cost more CPU per row. Each request gets
exactly its own rows.

Back-pressure: when rows are already waiting or computing and a new request would take them past
``max_queue_rows``, :meth:`Batcher.submit` refuses it with :class:`Overloaded` (429, Retry-After).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import Overloaded
from .settings import DEFAULTS


def buckets_for(max_batch_size: int) -> list[int]:
    """2, 4, 8, ... up to and including ``max_batch_size``.

    The smallest bucket is 2, not 1: XLA's CPU kernel for a one-row matrix product rounds differently
    from the kernel for two or more rows, so a lone row padded to two gets bit-identical results to
    the same row inside any larger batch (checked for every bucket up to 64).
    """
    out, b = [], 2
    while b < max_batch_size:
        out.append(b)
        b *= 2
    out.append(max(max_batch_size, 2))
    return out


_POOL: ThreadPoolExecutor | None = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    """Worker threads shared by every batcher (each batcher has at most one batch in flight), so
    versions dropped by a hot swap leave no idle threads behind."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="aios-batch")
    return _POOL


class Batcher:
    """The queue and batch runner of one model version.

    ``forward(*inputs) -> list[np.ndarray]`` maps a batch of rows (axis 0) to output arrays with
    the same number of rows. ``enabled=False`` runs each request alone (still padded to a bucket).
    """

    def __init__(
        self,
        forward: Callable[..., Sequence[np.ndarray]],
        input_specs: list[tuple[tuple, np.dtype]],
        *,
        max_batch_size: int = DEFAULTS.max_batch_size,
        max_queue_delay: float = DEFAULTS.max_queue_delay,
        max_queue_rows: int = DEFAULTS.max_queue_rows,
        enabled: bool = DEFAULTS.batching,
        on_batch: Callable[[int], None] | None = None,
        offload_after: float = 0.002,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.forward = forward
        self.input_specs = input_specs  # per input: (shape without the batch axis, dtype)
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.enabled = enabled and max_batch_size > 1
        self.buckets = buckets_for(max_batch_size)
        self.on_batch = on_batch
        self.queue: deque[tuple[list[np.ndarray], int, asyncio.Future]] = deque()
        self.queued_rows = 0
        self.max_queue_rows = max_queue_rows
        self.busy_rows = 0  # rows computing in a worker thread
        self.arriving = 0  # requests routed here whose bodies are in and being parsed
        self.offload_after = offload_after
        self.offload = False  # decided by warm_up()
        self.forward_seconds = 0.0
        self.forward_cores = 0.0  # CPU seconds per wall second of the largest-bucket forward
        self._busy = False
        self._scheduled = False
        self._spare_turn = False  # this run has had its one unconditional extra loop turn
        self._since = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- set-up -----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Compile every bucket size now (call before the version takes traffic), then decide where
        batches run: a largest-bucket forward slower than ``offload_after`` runs in a worker thread, so
        the event loop keeps reading and parsing the next batch's requests meanwhile; a fast one runs
        inline (handing a 40 us call to a thread costs more than it saves), and so does a slow one that
        already keeps every core busy (the loop thread would only compete with it)."""
        zeros = lambda b: [np.zeros((b, *shape), dtype) for shape, dtype in self.input_specs]
        for b in self.buckets:
            self.forward(*zeros(b))
        x = zeros(self.buckets[-1])
        timings = []
        for _ in range(5):
            wall, cpu = time.perf_counter(), time.process_time()
            self.forward(*x)
            timings.append((time.perf_counter() - wall, time.process_time() - cpu))
        self.forward_seconds, cpu = min(timings)  # the fastest: other processes only ever add to a timing
        self.forward_cores = cpu / max(self.forward_seconds, 1e-9)
        self.offload = (
            self.enabled and self.forward_seconds > self.offload_after and self.forward_cores < _cores() - 0.5
        )

    def depth(self) -> int:
        """Requests waiting in the queue (for the queue-depth gauge)."""
        return len(self.queue)

    def parsing(self) -> int:
        """Requests whose bodies are in and being parsed (for the parsing gauge)."""
        return self.arriving

    def pending_rows(self) -> int:
        """Rows waiting or computing: what ``max_queue_rows`` bounds (for the queue-rows gauge)."""
        return self.queued_rows + self.busy_rows

    # -- serving ----------------------------------------------------------------------------------
    def submit(self, inputs: list[np.ndarray], rows: int) -> asyncio.Future:
        """Queue a request's inputs; the future resolves to its own rows of every output.

        Raises :class:`Overloaded` when rows are already waiting or computing and this request would
        take them past ``max_queue_rows`` (a request always gets in when nothing waits)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (tests): forget the old loop's state
            self._loop, self._scheduled, self._busy, self.busy_rows = loop, False, False, 0
        pending = self.queued_rows + self.busy_rows
        if pending and pending + rows > self.max_queue_rows:
            raise Overloaded(
                f"the model's queue is full ({pending} rows waiting, limit {self.max_queue_rows}): retry in a "
                "second, as the Retry-After header says (the endpoint's --max-queue-rows sets the limit)"
            )
        if not self.enabled:
            if rows > self.buckets[-1]:  # chunks of the largest bucket: in a thread, off the event loop
                self.busy_rows += rows
                work = loop.run_in_executor(_pool(), self._run_padded, inputs, rows)
                work.add_done_callback(lambda _: self._release(rows))
                return work
            fut = loop.create_future()
            try:
                fut.set_result(self._run_padded(inputs, rows))
            except Exception as exc:  # the forward pass failed: the request gets a 500
                fut.set_exception(exc)
            return fut
        fut = loop.create_future()
        self.queue.append((inputs, rows, fut))
        self.queued_rows += rows
        if not self._busy:
            self._schedule()
        return fut

    def _run(self) -> None:
        if self._busy:  # a batch is computing in the worker thread; its completion runs the next one
            self._scheduled = False
            return
        # Room for more and within the delay budget: one spare loop turn always, more while others are
        # on their way.
        if (
            (not self._spare_turn or self.arriving > 0)
            and self.queued_rows < self.max_batch_size
            and time.perf_counter() - self._since < self.max_queue_delay
        ):
            self._spare_turn = True
            self._loop.call_soon(self._run)
            return
        self._scheduled = False
        batch: list[tuple[list[np.ndarray], int, asyncio.Future]] = []
        rows = 0
        while self.queue and (not batch or rows + self.queue[0][1] <= self.max_batch_size):
            item = self.queue.popleft()
            if item[2].cancelled():  # the client went away
                self.queued_rows -= item[1]
                continue
            batch.append(item)
            rows += item[1]
        self.queued_rows -= rows
        if not batch:
            return
        if rows > self.buckets[-1] or (self.offload and (len(batch) > 1 or self.queue or self.arriving)):
            # Large requests always; slow models under load only: a lone small request runs inline, since
            # waking a thread costs it latency.
            self._busy = True
            self.busy_rows = rows
            work = self._loop.run_in_executor(_pool(), self._compute, batch, rows)
            work.add_done_callback(lambda w: self._finish(batch, w))
            return
        if self.queue:  # more than one batch was waiting: run the rest on the next turn
            self._schedule()
        try:
            results = self._compute(batch, rows)
        except Exception as exc:
            self._fail(batch, exc)
            return
        self._deliver(batch, results)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._spare_turn = False
            self._since = time.perf_counter()
            self._loop.call_soon(self._run)

    def _compute(self, batch: list, rows: int) -> list[list[np.ndarray]]:
        """One forward pass for the whole batch; each request's own rows of every output."""
        if len(batch) == 1:
            return [self._run_padded(batch[0][0], rows)]
        n_inputs = len(batch[0][0])
        joined = [np.concatenate([b[0][i] for b in batch]) for i in range(n_inputs)]
        outs = self._run_padded(joined, rows)
        results, start = [], 0
        for _, n, _ in batch:
            results.append([o[start : start + n] for o in outs])
            start += n
        return results

    def _release(self, rows: int) -> None:
        self.busy_rows -= rows

    def _finish(self, batch: list, work: asyncio.Future) -> None:
        self._busy = False
        self.busy_rows = 0
        if self.queue:
            self._schedule()
        exc = work.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            self._deliver(batch, work.result())

    @staticmethod
    def _deliver(batch: list, results: list) -> None:
        for (_, _, fut), res in zip(batch, results):
            if not fut.done():
                fut.set_result(res)

    @staticmethod
    def _fail(batch: list, exc: BaseException) -> None:
        for _, _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)

    def _run_padded(self, inputs: list[np.ndarray], rows: int) -> list[np.ndarray]:
        """Run ``rows`` rows through the forward pass in compiled bucket sizes; return exactly ``rows`` rows."""
        top = self.buckets[-1]
        if rows > top:  # larger than any bucket: chunks of the largest one
            parts = [
                self._run_padded([x[s : s + top] for x in inputs], min(top, rows - s)) for s in range(0, rows, top)
            ]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        size = next(b for b in self.buckets if b >= rows)
        if size != rows:
            padded = []
            for x in inputs:
                buf = np.zeros((size, *x.shape[1:]), x.dtype)
                buf[:rows] = x
                padded.append(buf)
            inputs = padded
        if self.on_batch is not None:
            self.on_batch(rows)
        outs = self.forward(*inputs)
        return [o[:rows] for o in outs]
