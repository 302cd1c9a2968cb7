"""The serving dashboard: an endpoint's ``/metrics`` (traffic, latency, batching, back-pressure) and its language
models (``aios_llm:*``, named as vLLM names them)."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from ..serve.metrics import UNCOUNTED
from .panels import INST, RATE, big, dashboard, label_variable, labels_table, q, quantiles, series

MODEL = f'{INST}, model=~"$model"'
LM = f'{INST}, model_name=~"$lm"'
TRAFFIC = f'route!~"{"|".join(UNCOUNTED)}"'  # probes and scrapes are not traffic (as the endpoint counts)


def error_ratio(selector: str, by: str = "") -> str:
    """Answers with status >= 400 over all answers; 0 (not "no data") while there are none."""
    group = f" by ({by})" if by else ""
    total = f"sum{group} (rate(aios_serve_requests_total{{{selector}}}{RATE}))"
    errors = f'sum{group} (rate(aios_serve_requests_total{{{selector}, status=~"[45].."}}{RATE}))'
    return f"({errors} or {total} * 0) / {total}"


def serving() -> Dashboard:
    """The V2 endpoint's ``/metrics``: traffic, latency, batching, back-pressure, and the language models."""
    sel = f"{MODEL}, {TRAFFIC}"
    d = (
        dashboard(
            "aios-serving",
            "aios: serving endpoint",
            "Requests, latency, batching and back-pressure of aios serving endpoints (their /metrics, with a "
            "bearer token), and the language-model engines (aios_llm:*, named as vLLM names them).",
            ["serving"],
        )
        .with_variable(label_variable("instance", "instance", "aios_serve_requests_total", "Endpoint"))
        .with_variable(label_variable("model", "model", f"aios_serve_requests_total{{{INST}}}", "Model"))
        .with_variable(label_variable("lm", "model_name", f"aios_llm:kv_slots_total{{{INST}}}", "Language model"))
    )
    d = d.with_row(Row("Traffic"))
    for panel in (
        big(
            "Requests per second",
            "Requests answered, all models (probes and scrapes left out)",
            [q(f"sum(rate(aios_serve_requests_total{{{sel}}}{RATE}))", "req/s")],
            "reqps",
            w=6,
        ),
        big(
            "Error ratio",
            "Answers with status 400 or above, of all answers",
            [q(error_ratio(sel), "errors")],
            "percentunit",
            w=6,
            red_at=0.01,
        ),
        big(
            "Latency p99",
            "99th percentile of the time to answer, all models",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le) (rate(aios_serve_request_seconds_bucket{{{sel}}}{RATE})))",
                    "p99",
                )
            ],
            "s",
            w=6,
        ),
        big(
            "Model versions loaded",
            "Versions the endpoint holds in memory",
            [q(f"count(aios_serve_model_loaded{{{INST}}} == 1)", "loaded")],
            w=6,
        ),
        series(
            "Requests per second, by model and status",
            "Answers per second by HTTP status",
            [q(f"sum by (model, status) (rate(aios_serve_requests_total{{{sel}}}{RATE}))", "{{model}} {{status}}")],
            "reqps",
        ),
        series(
            "Requests per second, by version",
            "Traffic split between versions (a canary shows here)",
            [q(f"sum by (model, version) (rate(aios_serve_requests_total{{{sel}}}{RATE}))", "{{model}} v{{version}}")],
            "reqps",
        ),
        series(
            "Error ratio, by version",
            "Answers with status 400 or above, of each version's answers (compare a canary with the stable version)",
            [q(error_ratio(sel, "model, version"), "{{model}} v{{version}}")],
            "percentunit",
            min_val=0,
        ),
        series(
            "Latency, by model",
            "Median and 99th percentile of the time to answer",
            quantiles("aios_serve_request_seconds", "model", sel, "{{model}}"),
            "s",
        ),
    ):
        d = d.with_panel(panel)
    d = d.with_row(Row("Canaries"))
    for panel in (
        series(
            "Canary split",
            "Percent of each model's unversioned route sent to the candidate version (0: ended)",
            [q(f"aios_serve_canary_percent{{{MODEL}}}", "{{model}} v{{version}}")],
            "percent",
            min_val=0,
        ),
        series(
            "Canary requests per second, by arm",
            "Requests of a canary split, on the candidate (canary) and on the rest (base)",
            [
                q(
                    f"sum by (model, version, arm) (rate(aios_serve_canary_requests_total{{{MODEL}}}{RATE}))",
                    "{{model}} v{{version}} {{arm}}",
                )
            ],
            "reqps",
        ),
        series(
            "Canary error ratio, by arm",
            "Canary-split answers with status 400 or above, of each arm's answers",
            [
                q(
                    f"sum by (model, version, arm) (rate(aios_serve_canary_errors_total{{{MODEL}}}{RATE})) "
                    f"/ sum by (model, version, arm) (rate(aios_serve_canary_requests_total{{{MODEL}}}{RATE}))",
                    "{{model}} v{{version}} {{arm}}",
                )
            ],
            "percentunit",
            min_val=0,
        ),
        series(
            "Canary latency, by arm",
            "Median and 99th percentile of canary-split requests",
            quantiles(
                "aios_serve_canary_request_seconds", "model, version, arm", MODEL, "{{model}} v{{version}} {{arm}}"
            ),
            "s",
        ),
    ):
        d = d.with_panel(panel)
    d = d.with_row(Row("Batching and back-pressure"))
    for panel in (
        series(
            "Rows per forward pass",
            "Mean batch size of the forward passes",
            [
                q(
                    f"sum by (model, version) (rate(aios_serve_batch_size_sum{{{MODEL}}}{RATE})) "
                    f"/ sum by (model, version) (rate(aios_serve_batch_size_count{{{MODEL}}}{RATE}))",
                    "{{model}} v{{version}}",
                )
            ],
        ),
        series(
            "Waiting",
            "Requests waiting for a batch, and rows waiting for or in a forward pass",
            [
                q(f"aios_serve_queue_depth{{{MODEL}}}", "{{model}} v{{version}} requests"),
                q(f"aios_serve_queue_rows{{{MODEL}}}", "{{model}} v{{version}} rows"),
                q(f"aios_serve_requests_parsing{{{MODEL}}}", "{{model}} v{{version}} parsing"),
            ],
        ),
        series(
            "Rejected per second",
            "Requests refused by back-pressure (429 with Retry-After), by reason",
            [q(f"sum by (model, reason) (rate(aios_serve_rejected_total{{{MODEL}}}{RATE}))", "{{model}} {{reason}}")],
            "reqps",
        ),
        series(
            "Offloaded per second",
            "Large JSON bodies parsed and responses encoded in the helper process",
            [q(f"sum by (what) (rate(aios_serve_offloaded_total{{{INST}}}{RATE}))", "{{what}}")],
            "ops",
        ),
        labels_table(
            "Loaded versions",
            "Model versions in memory now",
            f"aios_serve_model_loaded{{{MODEL}}} == 1",
            ["model", "version"],
            w=24,
        ),
    ):
        d = d.with_panel(panel)
    d = d.with_row(Row("Language models"))
    for panel in (
        series(
            "Tokens per second",
            "Tokens generated and prompt tokens prefilled",
            [
                q(f"sum by (model_name) (rate(aios_llm:generation_tokens_total{{{LM}}}{RATE}))", "{{model_name}} gen"),
                q(f"sum by (model_name) (rate(aios_llm:prompt_tokens_total{{{LM}}}{RATE}))", "{{model_name}} prompt"),
            ],
        ),
        series(
            "Sequences",
            "Sequences decoding (holding a KV-cache slot) and waiting for one",
            [
                q(f"sum by (model_name) (aios_llm:num_requests_running{{{LM}}})", "{{model_name}} running"),
                q(f"sum by (model_name) (aios_llm:num_requests_waiting{{{LM}}})", "{{model_name}} waiting"),
            ],
        ),
        series(
            "Time to first token",
            "From arrival to the first token",
            quantiles("aios_llm:time_to_first_token_seconds", "model_name", LM, "{{model_name}}"),
            "s",
        ),
        series(
            "Inter-token latency",
            "Time between a sequence's tokens",
            quantiles("aios_llm:inter_token_latency_seconds", "model_name", LM, "{{model_name}}"),
            "s",
        ),
        series(
            "Request latency",
            "From arrival to the last token, and the part spent waiting for a KV-cache slot",
            [
                *quantiles("aios_llm:e2e_request_latency_seconds", "model_name", LM, "{{model_name}} e2e"),
                *quantiles("aios_llm:request_queue_time_seconds", "model_name", LM, "{{model_name}} queue"),
            ],
            "s",
        ),
        series(
            "KV-cache usage",
            "Slots in use of the slots allocated",
            [q(f"aios_llm:kv_cache_usage_perc{{{LM}}}", "{{model_name}} v{{version}}")],
            "percentunit",
            min_val=0,
            max_val=1,
        ),
        series(
            "Finished sequences per second",
            "By reason: stop, length, abort, error",
            [
                q(
                    f"sum by (model_name, finished_reason) (rate(aios_llm:request_success_total{{{LM}}}{RATE}))",
                    "{{model_name}} {{finished_reason}}",
                )
            ],
            "ops",
        ),
        series(
            "Time per output token",
            "Per sequence: time from its first to its last token over its tokens after the first",
            quantiles("aios_llm:request_time_per_output_token_seconds", "model_name", LM, "{{model_name}}"),
            "s",
        ),
    ):
        d = d.with_panel(panel)
    return d
