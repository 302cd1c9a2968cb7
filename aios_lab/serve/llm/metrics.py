"""Prometheus metrics of the language-model engines, named as vLLM names them (``aios_llm:`` for ``vllm:``), and the
``llm`` part of the endpoint's status row.

Per model and version (labels ``model_name``, ``version``):

=============================================== ========= ==================================================
``aios_llm:num_requests_running``               gauge     sequences holding a KV-cache slot
``aios_llm:num_requests_waiting``               gauge     sequences waiting for a slot
``aios_llm:kv_slots_used`` / ``kv_slots_total`` gauge     slots in use / slots allocated
``aios_llm:kv_cache_usage_perc``                gauge     slots in use / slots (0-1, vLLM's name)
``aios_llm:prompt_tokens_total``                counter   prompt tokens prefilled
``aios_llm:generation_tokens_total``            counter   tokens sampled
``aios_llm:request_success_total``              counter   sequences ended, by ``finished_reason`` (stop,
                                                          length, abort)
``aios_llm:time_to_first_token_seconds``        histogram arrival -> first token read by the host
``aios_llm:inter_token_latency_seconds``        histogram between a sequence's tokens
``aios_llm:request_time_per_output_token_seconds`` hist.  (last - first token) / (tokens - 1), per sequence
``aios_llm:e2e_request_latency_seconds``        histogram arrival -> last token
``aios_llm:request_queue_time_seconds``         histogram arrival -> prefill into a slot
=============================================== ========= ==================================================
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 240.0, 480.0)
RECENT = 256  # TTFTs kept per engine for the status row's percentiles
LABELS = ("model_name", "version")


class EngineStats:
    """One engine's children of the metric families, plus the counts the status row reads; called from the
    engine thread (prometheus_client's children are thread-safe)."""

    def __init__(self, fam: LLMMetrics | None, name: str, version: str):
        self.name, self.version = name, version
        self.prompt_total = 0
        self.generated_total = 0
        self.finished_total = 0
        self.ttfts: deque[float] = deque(maxlen=RECENT)
        self._fam = fam
        if fam is not None:
            lab = (name, version)
            self._prompt = fam.prompt_tokens.labels(*lab)
            self._gen = fam.generation_tokens.labels(*lab)
            self._ttft = fam.ttft.labels(*lab)
            self._itl = fam.itl.labels(*lab)
            self._tpot = fam.tpot.labels(*lab)
            self._e2e = fam.e2e.labels(*lab)
            self._queue = fam.queue.labels(*lab)

    def admitted(self, prompt_tokens: int, queued_s: float) -> None:
        self.prompt_total += prompt_tokens
        if self._fam is not None:
            self._prompt.inc(prompt_tokens)
            self._queue.observe(queued_s)

    def first_token(self, ttft_s: float) -> None:
        self.ttfts.append(ttft_s)
        if self._fam is not None:
            self._ttft.observe(ttft_s)

    def tokens(self, n: int) -> None:
        self.generated_total += n
        if self._fam is not None and n:
            self._gen.inc(n)

    def inter_token(self, seconds: float) -> None:
        if self._fam is not None:
            self._itl.observe(seconds)

    def finished(self, reason: str, e2e_s: float, tpot_s: float | None) -> None:
        self.finished_total += 1
        if self._fam is not None:
            self._fam.success.labels(self.name, self.version, reason).inc()
            self._e2e.observe(e2e_s)
            if tpot_s is not None:
                self._tpot.observe(tpot_s)


class LLMMetrics:
    """The ``aios_llm:*`` families in an app's registry, and the engines that report into them."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry or CollectorRegistry(auto_describe=True)
        self.registry = r
        g = lambda name, doc, labels=LABELS: Gauge(name, doc, list(labels), registry=r)
        self.running = g("aios_llm:num_requests_running", "Sequences holding a KV-cache slot (being decoded)")
        self.waiting = g("aios_llm:num_requests_waiting", "Sequences waiting for a free KV-cache slot")
        self.slots_used = g("aios_llm:kv_slots_used", "KV-cache slots in use")
        self.slots_total = g("aios_llm:kv_slots_total", "KV-cache slots allocated")
        self.usage = g("aios_llm:kv_cache_usage_perc", "KV-cache usage: slots in use / slots (1 = full)")
        self.prompt_tokens = Counter("aios_llm:prompt_tokens", "Prompt tokens prefilled", list(LABELS), registry=r)
        self.generation_tokens = Counter("aios_llm:generation_tokens", "Tokens generated", list(LABELS), registry=r)
        self.success = Counter(
            "aios_llm:request_success",
            "Sequences finished, by reason (stop, length, abort, error)",
            [*LABELS, "finished_reason"],
            registry=r,
        )
        h = lambda name, doc, buckets: Histogram(name, doc, list(LABELS), buckets=buckets, registry=r)
        self.ttft = h("aios_llm:time_to_first_token_seconds", "Time from arrival to the first token", TTFT_BUCKETS)
        self.itl = h("aios_llm:inter_token_latency_seconds", "Time between a sequence's tokens", ITL_BUCKETS)
        self.tpot = h(
            "aios_llm:request_time_per_output_token_seconds",
            "Per sequence: time from its first to its last token over its tokens after the first",
            ITL_BUCKETS,
        )
        self.e2e = h("aios_llm:e2e_request_latency_seconds", "Time from arrival to the last token", E2E_BUCKETS)
        self.queue = h("aios_llm:request_queue_time_seconds", "Time waiting for a KV-cache slot", TTFT_BUCKETS)
        self.engines: dict[tuple[str, str], Any] = {}  # live engines, retiring ones included
        self._lock = threading.Lock()

    def stats(self, name: str, version: str) -> EngineStats:
        return EngineStats(self, name, version)

    def track(self, engine: Any) -> None:
        """Gauges read from ``engine`` at scrape time; the engine stays listed until it stops."""
        lab = (engine.model.name, str(engine.model.version))
        with self._lock:
            self.engines[lab] = engine
        self.running.labels(*lab).set_function(lambda: engine.running)
        self.waiting.labels(*lab).set_function(lambda: engine.waiting_count)
        self.slots_used.labels(*lab).set_function(lambda: engine.running)
        self.slots_total.labels(*lab).set(engine.slots)
        self.usage.labels(*lab).set_function(lambda: engine.running / engine.slots)

    def untrack(self, engine: Any) -> None:
        lab = (engine.model.name, str(engine.model.version))
        with self._lock:
            if self.engines.get(lab) is engine:
                del self.engines[lab]
        for gauge in (self.running, self.waiting, self.slots_used, self.slots_total, self.usage):
            try:
                gauge.remove(*lab)
            except KeyError:
                pass

    def totals(self) -> dict[str, int]:
        """model -> tokens generated so far (by the engines still alive: what rates are taken over)."""
        out: dict[str, int] = {}
        with self._lock:
            engines = list(self.engines.values())
        for e in engines:
            out[e.model.name] = out.get(e.model.name, 0) + e.stats.generated_total
        return out

    def status(self, now: float, previous: tuple[float, dict[str, int]] | None) -> tuple[dict, dict | None]:
        """``(per model, overall)`` for the status row: tokens/s since ``previous`` (time, totals), TTFT
        p50/p99 over recent requests, running and waiting sequences, slots; overall is None without LMs."""
        with self._lock:
            engines = list(self.engines.values())
        if not engines:
            return {}, None
        per: dict[str, dict] = {}
        ttfts: dict[str, list[float]] = {}
        totals = self.totals()
        for e in engines:
            name = e.model.name
            d = per.setdefault(
                name,
                {
                    "routes": routes(name),
                    "versions": [],
                    "tokens_per_s": None,
                    "ttft_p50_ms": None,
                    "ttft_p99_ms": None,
                    "running": 0,
                    "waiting": 0,
                    "kv_slots": 0,
                    "kv_slots_used": 0,
                    "prompt_tokens": 0,
                    "generation_tokens": 0,
                    "finished": 0,
                },
            )
            d["versions"].append(e.model.version)
            d["running"] += e.running
            d["waiting"] += e.waiting_count
            d["kv_slots"] += e.slots
            d["kv_slots_used"] += e.running
            d["prompt_tokens"] += e.stats.prompt_total
            d["generation_tokens"] += e.stats.generated_total
            d["finished"] += e.stats.finished_total
            ttfts.setdefault(name, []).extend(e.stats.ttfts)
        for name, d in per.items():
            d["versions"].sort()
            d["ttft_p50_ms"], d["ttft_p99_ms"] = percentile_ms(ttfts[name], 50), percentile_ms(ttfts[name], 99)
            if previous is not None:
                dt = max(now - previous[0], 1e-3)
                d["tokens_per_s"] = round(max(0, totals.get(name, 0) - previous[1].get(name, 0)) / dt, 2)
        rates = [d["tokens_per_s"] for d in per.values() if d["tokens_per_s"] is not None]
        overall = {
            "routes": ["/v1/models", "/v1/completions", "/v1/chat/completions"],
            "models": sorted(per),
            "tokens_per_s": round(sum(rates), 2) if previous is not None else None,
            "running": sum(d["running"] for d in per.values()),
            "waiting": sum(d["waiting"] for d in per.values()),
        }
        return per, overall


def routes(name: str) -> list[str]:
    """The routes that serve language model ``name``."""
    return [
        "/v1/chat/completions",
        "/v1/completions",
        f"/v2/models/{name}/generate",
        f"/v2/models/{name}/generate_stream",
    ]


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[k] * 1000, 2)


__all__ = ["LLMMetrics", "EngineStats", "routes", "percentile_ms"]
