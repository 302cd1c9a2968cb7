"""Run one training job as a gang of processes, one per host, on the connected Ray cluster.

``run_gang(spec, ...)`` is called by the process that owns the job (its supervisor). It reserves a
placement group with one bundle per host (STRICT_SPREAD: distinct nodes), starts one ``Rank`` actor
per bundle with ``devices_per_host`` devices, checks the checkpoint directory is shared, and runs the
existing training loop on every rank under jax.distributed (coordinator on rank 0). Metric rows and
state come back to the caller through callbacks: the caller writes the catalog, the ranks never do.

A cancel (``should_stop()`` true) stops every rank at one agreed step, where each saves its part of
the checkpoint, then the gang is removed. A rank that dies (``kill -9``, a lost node) tears the whole
gang down and raises ``RankLost``; resuming from the latest checkpoint is the caller's retry.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import AiosError
from .capacity import GangShape, check_fits, uses_host_resource
from .probe import GANG_PREFIX, describe
from .rank import DECIDE_EVERY, Rank
from .reach import SHARE_HINT, NotShared

POLL_S = 0.25  # how often the driver collects rows and checks for cancel and dead ranks
START_TIMEOUT_S = 600.0  # starting the rank processes (imports of Ray and JAX) on a busy cluster


class RankLost(AiosError):
    """A rank's process died; the gang was torn down (a retry resumes from the latest checkpoint)."""


@dataclass(frozen=True)
class GangSpec:
    """A job as a gang: its TrainConfig (as a dict), where checkpoints go, which dataset version to read."""

    config: dict[str, Any]
    checkpoint_dir: str
    dataset_path: str
    dataset_hash: str | None
    shape: GangShape
    name: str = "gang"


def run_gang(
    spec: GangSpec,
    on_metrics: Callable[[dict], None] | None = None,
    on_state: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ray: Any = None,
) -> dict[str, Any]:
    """Train ``spec`` on the cluster; returns ``{"state": "succeeded"|"cancelled", "summary", "ranks"}``.

    ``ray``: a connected ``ray`` module (else this connects to the AIOS_HOME's cluster for the run).
    """
    if ray is None:
        from .session import ray_session

        with ray_session() as connected:
            return _Gang(connected, spec, on_metrics, on_state, should_stop).run()
    return _Gang(ray, spec, on_metrics, on_state, should_stop).run()


class _Gang:
    def __init__(self, ray, spec, on_metrics, on_state, should_stop):
        self.ray, self.spec = ray, spec
        self.emit = on_metrics or (lambda row: None)
        self.state = on_state or (lambda s: None)
        self.should_stop = should_stop or (lambda: False)
        self.pg = None
        self.actors: list[Any] = []
        self.ranks: list[dict] = []

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self._teardown()

    def _run(self) -> dict[str, Any]:
        ray, shape = self.ray, self.spec.shape
        nodes = describe(ray)["nodes"]
        check_fits(shape, nodes)
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = shape.bundle(uses_host_resource(nodes))
        self.pg = placement_group([bundle] * shape.hosts, strategy=shape.strategy, name=GANG_PREFIX + self.spec.name)
        self.state(
            {
                "state": "placing",
                "placement_group": self.pg.id.hex(),
                "bundles": [bundle] * shape.hosts,
                "strategy": shape.strategy,
            }
        )
        if not self._wait([self.pg.ready()], None):
            return self._cancelled(None)
        actor = ray.remote(Rank)
        options, env = self._rank_options()
        self.actors = [
            actor.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
                max_concurrency=shape.hosts + 4,
                **options,
            ).remote(i, shape.hosts, DECIDE_EVERY, env)
            for i in range(shape.hosts)
        ]
        refs = [a.where.remote() for a in self.actors]
        if not self._wait(refs, START_TIMEOUT_S):
            return self._cancelled(None)
        self.ranks = self._get(refs, "start")
        self._check_shared()
        coordinator = self._get(self.actors[0].coordinator.remote(), "start")
        self.state({"state": "running", "ranks": self.ranks, "coordinator": coordinator})
        return self._train(coordinator)

    def _rank_options(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Ray options of one rank and the environment it sets before JAX loads: forced host devices for
        CPU (set by the rank itself: a ``runtime_env`` would cost a fresh worker process), Ray's GPU/TPU
        accounting otherwise."""
        shape = self.spec.shape
        opts: dict[str, Any] = {"num_cpus": shape.cpus_per_host}
        if shape.kind == "cpu":
            return opts, {"XLA_HOST_DEVICES": str(shape.devices_per_host), "JAX_PLATFORMS": "cpu"}
        if shape.kind == "gpu":
            opts["num_gpus"] = shape.devices_per_host
        else:
            opts["resources"] = {"TPU": shape.devices_per_host}
        return opts, {}

    def _check_shared(self) -> None:
        """Rank 0 writes a marker in the checkpoint directory; every other host must see it."""
        if len(self.actors) < 2:
            return
        d = self.spec.checkpoint_dir
        mark = self._get(self.actors[0].mark.remote(d), f"write in --checkpoint-dir {d}")
        try:
            seen = self._get([a.sees.remote(d, mark["name"]) for a in self.actors[1:]], "look in --checkpoint-dir")
        finally:
            self._get(self.actors[0].unmark.remote(d, mark["name"], mark["made"]), "clean up its marker")
        blind = [self.ranks[i + 1] for i, ok in enumerate(seen) if not ok]
        if blind:
            b, r0 = blind[0], self.ranks[0]
            raise NotShared(
                f"--checkpoint-dir {d} is not shared: rank {b['rank']} on {b['host']} ({b['ip']}) does not see "
                f"a file rank 0 wrote there on {r0['host']} ({r0['ip']}); {SHARE_HINT}"
            )

    def _train(self, coordinator: str) -> dict[str, Any]:
        ray, n = self.ray, len(self.actors)
        refs = []
        for i, a in enumerate(self.actors):
            cfg = dict(self.spec.config, coordinator=coordinator, num_processes=n, process_id=i)
            refs.append(a.train.remote(cfg, self.spec.checkpoint_dir, self.spec.dataset_path, self.spec.dataset_hash))
        pending, results, stopping, started = list(refs), {}, False, False
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
            for ref in ready:
                results[refs.index(ref)] = self._result(refs, ref)
            started = self._collect(started)
            if not stopping and self.should_stop():
                stopping = True
                self.actors[0].request_stop.remote()
                self.state({"state": "stopping"})
        self._collect(started)
        state = "cancelled" if results[0].get("stopped") else "succeeded"
        summaries = [results[i] for i in range(n)]
        return {"state": state, "summary": results[0], "summaries": summaries, "ranks": self.ranks}

    def _result(self, refs: list, ref: Any) -> dict:
        """A rank's summary, or the gang's end: RankLost if a rank's process died, else the error a rank raised.

        When one rank dies the others fail too (their collectives break), so a failure first looks for a
        dead rank among the others before blaming the rank whose error arrived first.
        """
        from ray.exceptions import RayActorError, RayTaskError

        i = refs.index(ref)
        try:
            return self.ray.get(ref)
        except RayActorError:
            raise self._lost(i) from None
        except RayTaskError as exc:
            others = [r for r in refs if r is not ref]
            done, _ = self.ray.wait(others, num_returns=len(others), timeout=3.0) if others else ([], [])
            for r in done:
                try:
                    self.ray.get(r)
                except RayActorError:
                    raise self._lost(refs.index(r)) from None
                except Exception:  # another rank's consequential failure
                    pass
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AiosError):
                raise type(cause)(str(cause)) from None
            print(f"[aios] rank {i} failed:\n{exc}", flush=True)  # the remote traceback, for the job's log
            first = (str(cause or exc).strip().splitlines() or ["failed"])[0]
            raise AiosError(f"rank {i} failed: {first}") from None

    def _get(self, refs: Any, doing: str) -> Any:
        """``ray.get`` for the set-up calls, with a failure as one line (a rank that could not start or write)."""
        try:
            return self.ray.get(refs)
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            lines = str(cause).strip().splitlines() or [type(cause).__name__]
            raise AiosError(f"a rank of the gang could not {doing}: {lines[0][:300]}") from None

    def _lost(self, i: int) -> RankLost:
        r = self.ranks[i]
        return RankLost(f"rank {i} on {r['host']} ({r['ip']}, pid {r['pid']}) died; the gang was torn down")

    def _collect(self, started: bool) -> bool:
        """Forward rank 0's new rows (and its start info, once); True once started."""
        from ray.exceptions import RayActorError

        try:
            out = self.ray.get(self.actors[0].drain.remote())
        except RayActorError:
            raise self._lost(0) from None
        if not started and out["info"] is not None:
            self.state({"state": "started", "info": out["info"]})
            started = True
        for row in out["rows"]:
            self.emit(row)
        return started

    def _wait(self, refs: list, timeout: float | None) -> bool:
        """Wait for ``refs`` while watching for a cancel; False if cancelled first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(refs)
        while pending:
            if self.should_stop():
                return False
            _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            if deadline is not None and time.monotonic() > deadline:
                raise AiosError(f"the gang's {len(refs)} rank process(es) did not start within {timeout:.0f} s")
        return True

    def _cancelled(self, summary: dict | None) -> dict[str, Any]:
        return {"state": "cancelled", "summary": summary, "summaries": [], "ranks": self.ranks}

    def _teardown(self) -> None:
        """Kill every rank and remove the placement group (whatever state the gang is in)."""
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:  # already removed
                pass
        self.state({"state": "ended"})


def gang_config(config: Any, shape: GangShape) -> dict[str, Any]:
    """A TrainConfig (or its dict) set up for ``shape``: all hosts' devices in one data-parallel mesh."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {**data, "n_devices": shape.hosts * shape.devices_per_host, "num_processes": shape.hosts}
