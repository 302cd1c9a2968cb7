"""The sharded batch loader: batches that are a pure function of (seed, step), prefetched onto devices.

Order. Epoch ``e`` of a split is cut into shuffle *windows* of whole zarr chunks: the chunk order is
permuted from ``(seed, e)`` and the rows inside each window are permuted again. A split whose size
times three fits the memory budget is one window (a full permutation): it is cached in memory, and
each epoch's rows are laid out batch after batch one epoch ahead on a reader thread, so a batch is a
contiguous slice. A larger split streams window by window, so every chunk is decoded once per epoch
and memory stays near two windows (each at most an eighth of the budget, leaving room for decode
buffers and the allocator). Step ``s``
takes positions ``[j*B, (j+1)*B)`` of epoch ``s // steps_per_epoch`` (``j = s % steps_per_epoch``;
the last partial batch of an epoch is dropped). The order depends only on the dataset version, split,
batch size, seed and memory budget -- never on where a run started -- so a job resumed at step k sees
exactly the batches an uninterrupted one would.

Sharding. Each process builds only the rows its own devices hold (the batch slice that
``sharding`` gives its addressable devices) and joins them with
``jax.make_array_from_process_local_data``; in one process that is the whole batch.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInput

WINDOW_BYTES = 64 << 20  # streaming: rows are shuffled within windows of about this many bytes


def default_budget() -> int:
    """A quarter of physical memory: splits up to this size are cached in memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2 << 30


def default_sharding():
    """All devices on one ``data`` axis, batch dimension split across them."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))


@dataclass
class _Epoch:
    """One epoch's plan: windows of chunk ids, their row-count bounds, and positions inside each window."""

    windows: list[np.ndarray]  # chunk ids per window, in buffer order
    bounds: np.ndarray  # bounds[k]:bounds[k+1] are window k's positions in the epoch order
    pos: np.ndarray  # pos[bounds[k] + i] is a row offset inside window k's buffer


class Loader:
    """Global, sharded batches of one split: ``for step, x, y in Loader(ds, "train", 256, sharding)``."""

    def __init__(
        self,
        ds: Any,
        split: str = "train",
        batch_size: int = 128,
        sharding: Any = None,
        seed: int = 0,
        start_step: int = 0,
        prefetch: int = 2,
        memory_budget: int | None = None,
        *,
        steps: int | None = None,
        window_bytes: int = WINDOW_BYTES,
    ):
        self.ds, self.split = ds, split
        self._xa, self._ya = ds.arrays(split)
        self.n = int(self._xa.shape[0])
        self.batch_size = int(batch_size)
        if not 1 <= self.batch_size <= self.n:
            raise InvalidInput(f"batch size {batch_size} must be between 1 and the {self.n} rows of {ds.name}/{split}")
        if start_step < 0 or prefetch < 1:
            raise InvalidInput("start_step must be >= 0 and prefetch >= 1")
        self.seed, self.start_step, self.prefetch, self.steps = int(seed), int(start_step), int(prefetch), steps
        self.sharding = sharding if sharding is not None else default_sharding()
        self.x_shape = (self.batch_size, *self._xa.shape[1:])
        self.y_shape = (self.batch_size, *self._ya.shape[1:])
        self._lo, self._hi = _local_range(self.sharding, self.x_shape, ds, split)
        self.steps_per_epoch = self.n // self.batch_size

        self.chunk = int(self._xa.chunks[0])
        self.n_chunks = -(-self.n // self.chunk)
        row_bytes = self._xa.dtype.itemsize * int(
            np.prod(self._xa.shape[1:], dtype=np.int64)
        ) + self._ya.dtype.itemsize * int(np.prod(self._ya.shape[1:], dtype=np.int64))
        self.nbytes = self.n * row_bytes
        self.memory_budget = int(memory_budget) if memory_budget is not None else default_budget()
        # cached: the split, plus this epoch's and the next one's rows laid out batch after batch
        self.cached = 3 * self.nbytes <= self.memory_budget
        chunk_bytes = self.chunk * row_bytes
        if self.cached:
            self.window = self.n_chunks
        else:
            self.window = max(1, min(window_bytes, self.memory_budget // 8) // chunk_bytes)
            if 8 * chunk_bytes > self.memory_budget:
                raise InvalidInput(
                    f"memory_budget {self.memory_budget} bytes is too small to stream {ds.name}/{split}; "
                    f"give at least 8 chunks ({8 * chunk_bytes} bytes)"
                )
        self._epochs: dict[int, _Epoch] = {}
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._pending: dict[tuple[int, int], Future] = {}
        self._laid_out: dict[int, Future] = {}  # cached: epoch -> its batches' local rows, contiguous
        self._lock = threading.RLock()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="aios-loader-read")
        self._queue: queue.Queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the pure part -------------------------------------------------------------------------

    def host_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole global batch of ``step`` as numpy ``(x, y)``: a pure function of (seed, step)."""
        return self._rows(step, 0, self.batch_size)

    def local_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's slice of the global batch of ``step`` (all of it in a one-process job)."""
        return self._rows(step, self._lo, self._hi)

    def device_batch(self, step: int):
        """The global batch of ``step`` as jax arrays laid out by ``sharding``."""
        import jax

        x, y = self._batch_view(step) if self.cached else self._rows(step, self._lo, self._hi)
        if jax.process_count() == 1:  # the same placement; one batched transfer is the cheapest here
            return tuple(jax.device_put((x, y), (self.sharding, self.sharding)))
        return tuple(jax.make_array_from_process_local_data([self.sharding] * 2, [x, y], [self.x_shape, self.y_shape]))

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, Any, Any]]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="aios-loader", daemon=True)
            self._thread.start()
        return self

    def __next__(self) -> tuple[int, Any, Any]:
        if self._thread is None:
            iter(self)
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive():
                    raise StopIteration from None
        if item is None:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the prefetch thread and drop buffers."""
        self._stop.set()
        while self._thread is not None and self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
        self._reader.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._buffers.clear()
            self._pending.clear()
            self._laid_out.clear()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _produce(self) -> None:
        import jax

        step = self.start_step
        # Never reuse a host buffer: on the CPU backend device_put may alias host memory, and a train
        # step dispatched asynchronously can still be reading a batch long after it was handed over.
        # Streaming gathers fresh arrays; cached batches are views of a per-epoch copy never written again.
        try:
            while not self._stop.is_set() and (self.steps is None or step < self.steps):
                x, y = self.device_batch(step)
                jax.block_until_ready((x, y))
                self._put((step, x, y))
                step += 1
            self._put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- order and reading ---------------------------------------------------------------------

    def _rows(self, step: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        if step < 0:
            raise InvalidInput(f"step must be >= 0, got {step}")
        epoch, j = divmod(int(step), self.steps_per_epoch)
        plan = self._epoch(epoch)
        a, b = j * self.batch_size + lo, j * self.batch_size + hi
        out = (
            np.empty((b - a, *self._xa.shape[1:]), self._xa.dtype),
            np.empty((b - a, *self._ya.shape[1:]), self._ya.dtype),
        )
        k = int(np.searchsorted(plan.bounds, a, side="right")) - 1
        while k < len(plan.windows) and plan.bounds[k] < b:
            s, e = max(a, plan.bounds[k]), min(b, plan.bounds[k + 1])
            bx, by = self._buffer(epoch, k)
            idx = plan.pos[s:e]
            np.take(bx, idx, axis=0, out=out[0][s - a : e - a], mode="clip")  # clip: unbuffered
            np.take(by, idx, axis=0, out=out[1][s - a : e - a], mode="clip")
            k += 1
        self._read_ahead(epoch, k - 1)
        return out

    def _batch_view(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Cached: this process's rows of ``step`` as views of its epoch's laid-out copy (no per-batch gather).

        The copy is built once per epoch on the reader thread, one epoch ahead, and never written
        again, so the views stay valid even if a transfer aliases them.
        """
        epoch, j = divmod(int(step), self.steps_per_epoch)
        with self._lock:
            for old in [e for e in self._laid_out if e < epoch or e > epoch + 1]:
                del self._laid_out[old]
            for e in (epoch, epoch + 1):
                if e not in self._laid_out:
                    self._laid_out[e] = self._submit(self._lay_out, e)
            future = self._laid_out[epoch]
        bx, by = future.result()
        rows = self._hi - self._lo
        return bx[j * rows : (j + 1) * rows], by[j * rows : (j + 1) * rows]

    def _lay_out(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        bx, by = self._buffer(epoch, 0)
        used = self._epoch(epoch).pos[: self.steps_per_epoch * self.batch_size]
        idx = used.reshape(self.steps_per_epoch, self.batch_size)[:, self._lo : self._hi].ravel()
        return np.take(bx, idx, axis=0), np.take(by, idx, axis=0)

    def _submit(self, fn: Any, *args: Any) -> Future:
        """Run ``fn`` on the reader thread, or right here once the loader is closed."""
        try:
            return self._reader.submit(fn, *args)
        except RuntimeError:
            done: Future = Future()
            done.set_result(fn(*args))
            return done

    def _epoch(self, epoch: int) -> _Epoch:
        with self._lock:
            plan = self._epochs.get(epoch)
            if plan is None:
                plan = self._plan(epoch)
                self._epochs[epoch] = plan
                for old in [e for e in self._epochs if e < epoch or e > epoch + 1]:
                    del self._epochs[old]
            return plan

    def _plan(self, epoch: int) -> _Epoch:
        rng = np.random.default_rng([self.seed % (1 << 63), epoch])
        if self.window >= self.n_chunks:  # one window holding the whole split, in its stored order
            pos = rng.permutation(self.n).astype(np.int32 if self.n < 2**31 else np.int64)
            return _Epoch([np.arange(self.n_chunks)], np.array([0, self.n]), pos)
        ids = rng.permutation(self.n_chunks)
        windows = [ids[i : i + self.window] for i in range(0, self.n_chunks, self.window)]
        sizes = [sum(self._chunk_len(c) for c in w) for w in windows]
        pos = np.concatenate([rng.permutation(s) for s in sizes]).astype(np.int32)
        return _Epoch(windows, np.concatenate([[0], np.cumsum(sizes)]), pos)

    def _chunk_len(self, c: int) -> int:
        return min(self.chunk, self.n - c * self.chunk)

    def _buffer(self, epoch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        key = (0, 0) if self.window >= self.n_chunks else (epoch, k)
        with self._lock:
            if key in self._buffers:
                return self._buffers[key]
            future = self._pending.get(key)
        if future is None:
            data = self._load(self._epoch(epoch).windows[k])
        else:
            data = future.result()
        with self._lock:
            self._pending.pop(key, None)
            self._buffers[key] = data
            if key != (0, 0):  # streaming: keep this window and the one after it, nothing older
                for old in [q for q in self._buffers if q < key]:
                    del self._buffers[old]
        return data

    def _read_ahead(self, epoch: int, k: int) -> None:
        """Start decoding the window after ``(epoch, k)`` on the reader thread."""
        if self.window >= self.n_chunks or self._stop.is_set():
            return
        plan = self._epoch(epoch)
        nxt = (epoch, k + 1) if k + 1 < len(plan.windows) else (epoch + 1, 0)
        with self._lock:
            if nxt in self._buffers or nxt in self._pending:
                return
            try:
                self._pending[nxt] = self._reader.submit(lambda: self._load(self._epoch(nxt[0]).windows[nxt[1]]))
            except RuntimeError:  # reader shut down by close()
                pass

    def _load(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode whole chunks into one buffer each for x and y (every chunk once per epoch)."""
        if len(chunk_ids) == self.n_chunks and np.array_equal(chunk_ids, np.arange(self.n_chunks)):
            return self._xa[...], self._ya[...]
        total = sum(self._chunk_len(c) for c in chunk_ids)
        bx = np.empty((total, *self._xa.shape[1:]), self._xa.dtype)
        by = np.empty((total, *self._ya.shape[1:]), self._ya.dtype)
        at = 0
        for c in chunk_ids:
            s, e = c * self.chunk, c * self.chunk + self._chunk_len(c)
            bx[at : at + e - s] = self._xa[s:e]
            by[at : at + e - s] = self._ya[s:e]
            at += e - s
        _trim()
        return bx, by

    def __repr__(self) -> str:
        mode = "cached" if self.cached else f"streaming, {self.window}-chunk windows"
        return (
            f"Loader({self.ds.name}:v{self.ds.version}/{self.split}, batch {self.batch_size}, seed {self.seed}, "
            f"{self.steps_per_epoch} steps/epoch, {mode})"
        )


def _local_range(sharding: Any, shape: tuple[int, ...], ds: Any, split: str) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of a global batch that this process's devices hold."""
    try:
        sharding.shard_shape(shape)
        index_map = sharding.addressable_devices_indices_map(shape)
    except (ValueError, TypeError):
        parts = _batch_parts(sharding)
        raise InvalidInput(
            f"batch size {shape[0]} does not split evenly over the {parts} devices of the "
            f"sharding's batch axis; use a multiple of the device count ({parts})"
        ) from None
    spans = sorted(
        {
            (s[0].start or 0, shape[0] if s[0].stop is None else s[0].stop)
            for s in (idx if isinstance(idx, tuple) else (idx,) for idx in index_map.values())
        }
    )
    lo, hi = spans[0][0], max(e for _, e in spans)
    covered = lo
    for s, e in spans:
        if s > covered:
            raise InvalidInput(
                "this process's devices hold a non-contiguous part of the batch; "
                "order the mesh so each process's devices are adjacent on the data axis"
            )
        covered = max(covered, e)
    return lo, hi


def _batch_parts(sharding: Any) -> int:
    """How many ways the sharding cuts the batch axis (for the error message)."""
    spec, mesh = getattr(sharding, "spec", None), getattr(sharding, "mesh", None)
    if spec is None or mesh is None or not len(spec) or spec[0] is None:
        return len(sharding.device_set)
    axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return int(np.prod([mesh.shape[a] for a in axes]))


def _trim() -> None:
    """Hand freed decode buffers back to the OS (glibc keeps them per thread arena otherwise)."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc: Any = None
