"""The models a server holds: loaded versions, aliases, load/unload and hot swap.

Models come only from :mod:`aios_lab.registry`, through :class:`ModelSource` (the one seam, kept
small so the server can be pointed at another source). For each model name the server keeps:

* ``follow``: what the unversioned route serves: an alias (``production`` when the model has one),
  ``None`` for the newest version, or a pinned version number;
* the loaded versions, each a :class:`Served` with its own batcher (buckets compiled at load), or for
  a language model its own engine (:mod:`.llm.engine`: KV-cache slots, decode step compiled at load);
* the aliases it serves, alias -> version.

Hot swap: :meth:`Repository.refresh` (polled by the app, and run by a repository load call)
resolves every followed alias again; when one moved it loads the new version, warms it up off the
event loop, and only then replaces the routing table in one assignment. Requests already routed
hold the old :class:`Served` and finish on it; nothing in flight fails (a dropped language model's
engine finishes its streams, then stops). A swap that fails (the
version does not verify, or does not load) is recorded as a :class:`SwapFailure` and retried with
exponential back-off (2 s, 4 s, 8 s ... at most 5 minutes), not on every poll; the index, the
endpoint's catalog row and ``aios endpoints`` show it until a swap succeeds or the alias moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from ..errors import AiosError, InvalidInput
from .batching import Batcher
from .errors import NoRoute
from .protocol import DATATYPES
from .settings import DEFAULTS, ServeSettings

log = logging.getLogger("aios_lab.serve")

DEFAULT_ALIAS = "production"
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 300.0


class ModelSource:
    """How the server reads models: :mod:`aios_lab.registry` and nothing else (the one seam)."""

    @staticmethod
    def _registry():
        from .. import registry

        return registry

    def names(self) -> list[str]:
        """Every model name the registry holds (the app polls this every second)."""
        return self._registry().model_names()

    def aliases(self, name: str) -> dict[str, int]:
        """alias -> version for ``name``."""
        return {a: int(m.version) for m in self._registry().list_models(name) for a in m.aliases}

    def resolve(self, name: str, ref: int | str | None) -> int:
        """The version number ``ref`` (None = newest, an int, or an alias) points at now."""
        return int(self._registry().resolve(name, ref))

    def load(self, name: str, version: int) -> Any:
        """A loaded, manifest-verified model version: ``.forward``, ``.signature``, ``.version``; or, for a
        language model (``task == "lm"``), what :func:`serve.llm.model.from_loaded` reads (``parts()``)."""
        return self._registry().load(name, version)


@dataclass
class Served:
    """One loaded model version and its batcher, or for a language model its engine (``serve.llm.Engine``)."""

    name: str
    version: int
    model: Any
    signature: dict
    batcher: Batcher | None
    engine: Any = None
    loaded: float = field(default_factory=time.time)
    vstr: str = field(init=False)  # the version as routes and labels spell it (read twice per request)
    values_per_row: float = field(init=False)  # output values per row (inf when a dimension is variable)

    def __post_init__(self) -> None:
        self.vstr = str(self.version)
        dims = [d for o in self.signature["outputs"] for d in o["shape"][1:]]
        per_output = [prod(o["shape"][1:]) for o in self.signature["outputs"]]
        self.values_per_row = float("inf") if any(d < 0 for d in dims) else float(sum(per_output))


@dataclass
class SwapFailure:
    """A hot swap that failed: ``ref`` (an alias, or None for the newest version) moved to ``version``."""

    model: str
    ref: str | None
    version: int
    serving: int
    reason: str
    attempts: int
    failed_at: float
    next_retry: float

    def describe(self) -> str:
        return (
            f"hot swap of {self.ref or 'the newest version'} to v{self.version} failed "
            f"({self.attempts} {'try' if self.attempts == 1 else 'tries'}): {self.reason}; still serving "
            f"v{self.serving}; next try in {max(0, round(self.next_retry - time.time()))} s"
        )

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "ref": self.ref,
            "version": self.version,
            "serving": self.serving,
            "reason": self.reason,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "next_retry": self.next_retry,
        }


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 2, 4, 8, ... at most 300."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(attempts - 1, 20))


@dataclass
class Entry:
    name: str
    follow: int | str | None
    default: int
    versions: dict[int, Served]
    aliases: dict[str, int]
    pinned: set[int]


def _outputs(y: Any) -> list[np.ndarray]:
    if isinstance(y, dict):
        return [np.asarray(v) for v in y.values()]
    if isinstance(y, (list, tuple)):
        return [np.asarray(v) for v in y]
    return [np.asarray(y)]


class Repository:
    """Loaded model versions and the routing table ``(name, version-or-alias-or-None) -> Served``."""

    def __init__(
        self,
        source: ModelSource | None = None,
        *,
        settings: ServeSettings = DEFAULTS,
        on_change: Callable[[Repository], None] | None = None,
        on_load: Callable[[Served], None] | None = None,
        on_drop: Callable[[Served], None] | None = None,
        batch_observer: Callable[[str, str], Callable[[int], None]] | None = None,
        engine_stats: Callable[[str, str], Any] | None = None,
    ):
        self.source = source or ModelSource()
        self.settings = settings
        self.on_change, self.on_load, self.on_drop = on_change, on_load, on_drop
        self.batch_observer = batch_observer
        self.engine_stats = engine_stats  # (name, version) -> the engine's metrics, for language models
        self.entries: dict[str, Entry] = {}
        self.routes: dict[tuple[str, str | None], Served] = {}
        self.failures: dict[tuple[str, str | None], SwapFailure] = {}  # hot swaps waiting for their retry
        self.load_failures: dict[str, str] = {}  # models that never loaded here -> why
        self._lock = threading.RLock()  # one load/unload at a time; routing never takes it

    # -- the hot path ---------------------------------------------------------------------------
    def route(self, name: str, version: str | None) -> Served:
        """The version serving ``name`` (at ``version``: a number, an alias, or None for the default)."""
        served = self.routes.get((name, version))
        if served is not None:
            return served
        if name not in self.entries:
            raise NoRoute(
                f"unknown model {name!r}: it is not loaded on this server "
                "(POST /v2/repository/index lists the registry's models)"
            )
        loaded = ", ".join(self.version_names(name))
        raise NoRoute(f"model {name!r} has no loaded version {version!r}; loaded: {loaded}")

    def version_names(self, name: str) -> list[str]:
        e = self.entries.get(name)
        if e is None:
            return []
        return [str(v) for v in sorted(e.versions)] + sorted(e.aliases)

    # -- loading --------------------------------------------------------------------------------
    def _make(self, name: str, version: int) -> Served:
        try:
            m = self.source.load(name, version)
        except AiosError:
            raise
        except (KeyError, LookupError, FileNotFoundError) as exc:
            raise InvalidInput(f"cannot load model {name!r} version {version}: {exc}") from None
        if getattr(m, "task", None) == "lm":
            return self._make_lm(name, version, m)
        sig = m.signature
        for spec in sig["inputs"]:
            if not spec["shape"] or spec["shape"][0] != -1:
                raise InvalidInput(f"model {name!r} input {spec['name']!r} has no batch axis (-1); cannot serve it")
            if spec["datatype"] not in DATATYPES or spec["datatype"] == "BYTES":
                raise InvalidInput(
                    f"model {name!r} input {spec['name']!r} has datatype {spec['datatype']}, "
                    "which this server cannot batch"
                )
        specs = [(tuple(s["shape"][1:]), DATATYPES[s["datatype"]]) for s in sig["inputs"]]
        fwd = m.forward
        observer = self.batch_observer(name, str(version)) if self.batch_observer else None
        cfg = self.settings
        batcher = Batcher(
            lambda *xs: _outputs(fwd(*xs)),
            specs,
            max_batch_size=cfg.max_batch_size,
            max_queue_delay=cfg.max_queue_delay,
            max_queue_rows=cfg.max_queue_rows,
            enabled=cfg.batching,
            on_batch=observer,
        )
        t0 = time.perf_counter()
        batcher.warm_up()
        log.info(
            "loaded %s v%s (buckets %s compiled in %.2fs)", name, version, batcher.buckets, time.perf_counter() - t0
        )
        return Served(name, int(version), m, sig, batcher)

    def _make_lm(self, name: str, version: int, loaded: Any) -> Served:
        """A language model: its engine, warmed up (cache allocated, decode step compiled) and running."""
        from .llm.engine import Engine
        from .llm.model import from_loaded

        m = from_loaded(name, version, loaded)
        cfg = self.settings
        stats = self.engine_stats(name, str(version)) if self.engine_stats else None
        engine = Engine(
            m,
            slots=cfg.lm_slots,
            max_len=cfg.lm_max_len,
            max_waiting=cfg.lm_max_waiting,
            steps_per_call=cfg.lm_steps_per_call,
            stats=stats,
        )
        t0 = time.perf_counter()
        engine.start()
        log.info(
            "loaded language model %s v%s (%d slots of %d tokens, ready in %.2fs)",
            name,
            version,
            engine.slots,
            engine.max_len,
            time.perf_counter() - t0,
        )
        return Served(name, int(version), m, m.signature, None, engine)

    def load(self, name: str, ref: int | str | None = None) -> Served:
        """Load (or reload) ``name``: ``ref`` None follows the model's default, an int pins that
        version, a string is an alias to serve. Warm-up happens before any route changes."""
        with self._lock:
            e = self.entries.get(name)
            if ref is None:
                follow = e.follow if e else (DEFAULT_ALIAS if DEFAULT_ALIAS in self.source.aliases(name) else None)
            else:
                follow = ref
            version = self.source.resolve(name, follow)
            served = (e.versions.get(version) if e else None) or self._make(name, version)
            if e is None:
                e = Entry(name, follow, version, {}, {}, set())
            else:
                e = Entry(name, e.follow, e.default, dict(e.versions), dict(e.aliases), set(e.pinned))
            e.versions[version] = served
            if ref is None or e.follow == ref:
                e.default, e.follow = version, follow
            if isinstance(follow, str):
                e.aliases[follow] = version
            elif isinstance(ref, int):
                e.pinned.add(version)
            self._commit(e)
            self.load_failures.pop(name, None)
            for key in [k for k in self.failures if k[0] == name and e.aliases.get(k[1], e.default) == version]:
                del self.failures[key]  # an explicit load of the version a swap failed on succeeded
            return served

    def unload(self, name: str) -> bool:
        """Stop serving ``name`` (all versions). Requests in flight finish. False if it was not loaded."""
        with self._lock:
            e = self.entries.get(name)
            if e is None:
                return False
            entries = dict(self.entries)
            del entries[name]
            for key in [k for k in self.failures if k[0] == name]:
                del self.failures[key]
            self._publish(entries)
            for s in e.versions.values():
                if self.on_drop:
                    self.on_drop(s)
            return True

    def refresh(self) -> list[tuple[str, int, int]]:
        """Follow moved aliases and new versions; returns the swaps made ``(name, old, new)``.

        A failed swap is not tried again before its back-off has passed, unless the alias moves on."""
        swaps = []
        for name in list(self.entries):
            e = self.entries.get(name)
            if e is None:
                continue
            for ref in sorted({*e.aliases, e.follow} - {None}, key=str) + ([None] if e.follow is None else []):
                if isinstance(ref, int):
                    continue
                current = e.aliases.get(ref) if ref is not None else e.default
                try:
                    version = self.source.resolve(name, ref)
                except Exception as exc:  # alias deleted, registry busy: keep serving what we have
                    log.debug("refresh %s %s: %s", name, ref, exc)
                    continue
                failed = self.failures.get((name, ref))
                if version == current:
                    self.failures.pop((name, ref), None)  # the alias moved back: nothing is broken any more
                    continue
                if failed is not None and failed.version == version and time.time() < failed.next_retry:
                    continue
                try:
                    self._swap(name, ref, version)
                    swaps.append((name, current, version))
                    self.failures.pop((name, ref), None)
                except Exception as exc:
                    attempts = failed.attempts + 1 if failed is not None and failed.version == version else 1
                    now = time.time()
                    reason = str(exc) if isinstance(exc, AiosError) else f"{type(exc).__name__}: {exc}"
                    f = SwapFailure(name, ref, version, current, reason, attempts, now, now + backoff(attempts))
                    self.failures[(name, ref)] = f
                    log.warning("%s: %s", name, f.describe())
                e = self.entries.get(name)
                if e is None:
                    break
        return swaps

    def _swap(self, name: str, ref: str | None, version: int) -> None:
        with self._lock:
            e = self.entries.get(name)
            if e is None:
                return
            served = e.versions.get(version) or self._make(name, version)  # warm-up, off the routes
            e = Entry(name, e.follow, e.default, dict(e.versions), dict(e.aliases), set(e.pinned))
            e.versions[version] = served
            if ref is not None:
                e.aliases[ref] = version
            if ref == e.follow:
                e.default = version
            self._commit(e)
            log.info("hot swap: %s %s -> v%s", name, ref or "(newest)", version)

    def _commit(self, e: Entry) -> None:
        keep = {e.default, *e.aliases.values(), *e.pinned}
        dropped = [s for v, s in e.versions.items() if v not in keep]
        e.versions = {v: s for v, s in e.versions.items() if v in keep}
        entries = dict(self.entries)
        new = e.name not in entries or any(v not in entries[e.name].versions for v in e.versions)
        entries[e.name] = e
        self._publish(entries)
        if new and self.on_load:
            for s in e.versions.values():
                self.on_load(s)
        for s in dropped:
            if self.on_drop:
                self.on_drop(s)

    def _publish(self, entries: dict[str, Entry]) -> None:
        routes: dict[tuple[str, str | None], Served] = {}
        for e in entries.values():
            for v, s in e.versions.items():
                routes[(e.name, str(v))] = s
            for a, v in e.aliases.items():
                routes[(e.name, a)] = e.versions[v]
            routes[(e.name, None)] = e.versions[e.default]
        # Two plain assignments: a request sees the old table or the new one, never a mix that fails.
        self.routes = routes
        self.entries = entries
        if self.on_change:
            self.on_change(self)

    # -- views ----------------------------------------------------------------------------------
    def loaded(self) -> list[Served]:
        return [s for e in self.entries.values() for s in e.versions.values()]

    def index(self, ready_only: bool = False) -> list[dict]:
        """The repository index: loaded versions READY; with ``ready_only`` False also the versions a hot
        swap failed on and the registry's models not loaded here, UNAVAILABLE with the reason."""
        rows = []
        for e in self.entries.values():
            for v in sorted(e.versions):
                rows.append({"name": e.name, "version": str(v), "state": "READY", "reason": ""})
        if not ready_only:
            for f in list(self.failures.values()):
                rows.append(
                    {"name": f.model, "version": str(f.version), "state": "UNAVAILABLE", "reason": f.describe()}
                )
            try:
                names = self.source.names()
            except Exception as exc:
                log.warning("registry listing failed: %s", exc)
                names = []
            for name in names:
                if name not in self.entries:
                    why = self.load_failures.get(name)
                    reason = f"failed to load: {why}" if why else "unloaded"
                    rows.append({"name": name, "state": "UNAVAILABLE", "reason": reason})
        return rows

    def swap_failures(self) -> dict[str, dict]:
        """model -> its latest failed hot swap (for the endpoint's catalog row)."""
        out: dict[str, dict] = {}
        for f in sorted(self.failures.values(), key=lambda f: f.failed_at):
            out[f.model] = f.to_json()
        return out

    def summary(self) -> dict[str, list[str]]:
        """name -> served versions and aliases (what the catalog's endpoints row records)."""
        return {name: self.version_names(name) for name in self.entries}
