"""The Grafana dashboards shipped under aios_lab/grafana/: the committed JSON is what the generator builds with
grafana-foundation-sdk and what the SDK reads back unchanged; every query (panels and variables) names only
metrics, and labels, that our exporters expose, scraped from a real running job (and one waiting behind it) and
from a real endpoint's ``/metrics`` after V2 and language-model traffic; and every exposed family has a panel.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client.parser import text_string_to_metric_families
from test_serve_support import publish_tiny, running_server

import aios_lab as aios
from aios_lab import grafana, metric_names as mn, observability
from aios_lab.grafana import generate

pytestmark = pytest.mark.timeout(300)

LLAMA = Path(__file__).parent / "fixtures" / "hf" / "llama"
LONG = dict(model="mlp", batch=32, steps=200_000, checkpoint_every=50, eval_every=20, lr=3e-3)
# PromQL words that are not metric names
WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
TARGET_LABELS = {"instance", "job"}  # Prometheus adds them to every series it scrapes
# exposed for alerts and ad-hoc queries, deliberately not charted
NOT_CHARTED = {
    "aios_job_created_timestamp_seconds",
    "aios_job_started_timestamp_seconds",
    "aios_job_ended_timestamp_seconds",
    "aios_job_eval_step",
    "aios_llm:kv_slots_used",  # charted as aios_llm:kv_cache_usage_perc
}


def test_the_committed_dashboards_are_what_the_generator_builds():
    assert set(generate.DASHBOARDS) == set(grafana.NAMES)
    for name in grafana.NAMES:
        committed = grafana.path(name).read_text()
        assert committed == generate.render(name), f"{name}.json is stale: run python -m aios_lab.grafana.generate"
        # the SDK's own model of a dashboard reads it back and writes the same JSON
        model = Dashboard.from_json(json.loads(committed))
        assert json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n" == committed
        board = grafana.load(name)
        assert board["uid"] == name and board["schemaVersion"] >= 39
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            if panel["type"] != "row":
                assert panel["targets"] and panel["title"] and panel["description"], panel


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The metric selectors of a PromQL expression (name, label names matched) and the labels it groups by."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range windows
    grouped = {label.strip() for _, labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
    expr = GROUPING.sub(" ", expr)
    found = []
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", expr):
        if m.group(1) in WORDS or expr[m.end() :].lstrip().startswith("("):
            continue  # a keyword or a function call
        found.append((m.group(1), set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2) or ""))))
    return found, grouped


def test_the_promql_reader_finds_names_labels_and_groupings():
    found, grouped = selectors(
        'histogram_quantile(0.99, sum by (le, model) (rate(aios_llm:ttft_seconds_bucket{model_name=~"$lm"}'
        '[$__rate_interval]))) / ignoring(x) count(up) and on (job_name) (aios_job_state{state="running"} == 1)'
    )
    assert found == [("aios_llm:ttft_seconds_bucket", {"model_name"}), ("up", set()), ("aios_job_state", {"state"})]
    assert grouped == {"le", "model", "x", "job_name"}


def exposed(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """What an exposition declares: every sample name a family can have, and the label names seen per name."""
    names, labels = set(), {}
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in ("", *SUFFIXES.get(family.type, ()))}
        for s in family.samples:
            names.add(s.name)
            labels.setdefault(s.name, set(TARGET_LABELS)).update(s.labels)
    return names, labels


def queries(board: dict) -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target and query variable."""
    out = [
        (f"panel {p['title']!r}", t["expr"], t.get("legendFormat", ""))
        for p in board["panels"]
        for t in p.get("targets", [])
    ]
    for v in board["templating"]["list"]:
        if v["type"] == "query":  # label_values(SELECTOR, LABEL): the selector must have that label
            selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]).groups()
            needs = f'{label}!=""'
            expr = f"{selector[:-1]}, {needs}}}" if selector.endswith("}") else f"{selector}{{{needs}}}"
            out.append((f"variable {v['name']!r}", expr, ""))
    return out


def check(board: dict, text: str) -> list[str]:
    """What in ``board`` names a metric or a label that the exposition ``text`` does not have."""
    names, labels = exposed(text)
    problems = []
    for where, expr, legend in queries(board):
        found, grouped = selectors(expr)
        assert found, (where, expr)
        seen = set().union(*(labels.get(name, set()) for name, _ in found))
        for name, matched in found:
            if name not in names:
                problems.append(f"{where}: {name} is not exposed")
            elif name in labels and not matched <= labels[name]:
                problems.append(f"{where}: {name} has no label {sorted(matched - labels[name])}")
        if seen:  # labels of series the scrape held: grouping and legends must use them
            problems += [f"{where}: no label {g!r} to group by" for g in grouped - seen - {"le"}]
            problems += [
                f"{where}: legend uses {g!r}" for g in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend) if g not in seen
            ]
    return problems


def uncharted(board: dict, text: str) -> set[str]:
    """The metric families of the exposition ``text`` that no query of ``board`` reads (and that should be)."""
    family_of = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # a counter's or histogram's creation time, not a metric of its own
            continue
        for suffix in ("", *SUFFIXES.get(family.type, ())):
            family_of[family.name + suffix] = family.name
    read = {family_of.get(name) for _, expr, _ in queries(board) for name, _ in selectors(expr)[0]}
    return set(family_of.values()) - read - NOT_CHARTED


def test_every_query_names_what_a_real_job_and_a_real_endpoint_expose(aios_home):
    from aios_lab import registry

    aios.dataset("digits", "sklearn:digits")
    running = aios.train("graf-run", dataset="digits", devices=8, **LONG)
    queued = aios.train("graf-wait", dataset="digits", devices=2, priority=1, **LONG)
    try:
        publish_tiny("tiny", seed=0)
        registry.import_model("chat", str(LLAMA), alias="production")
        with (
            running_server(aios_home, lm_slots=2) as srv,
            httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=120) as c,
        ):
            x = np.zeros((2, 4), np.float32)
            body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
            assert c.post("/v2/models/tiny/infer", content=orjson.dumps(body)).status_code == 200
            assert c.post("/v2/models/nope/infer", content=orjson.dumps(body)).status_code == 404
            publish_tiny("tiny", seed=1, alias=None)  # v2, the candidate of a canary split
            deadline = time.monotonic() + 60
            while (
                split := c.post(
                    "/v2/repository/models/tiny/canary",
                    json={"version": 2, "percent": 50},
                    headers=srv.headers("admin"),
                )
            ).status_code != 200:
                assert time.monotonic() < deadline, split.text  # the server picks v2 up within its poll interval
                time.sleep(0.2)
            for i in range(4):
                r = c.post("/v2/models/tiny/infer", content=orjson.dumps(body), headers={"X-Request-ID": f"r{i}"})
                assert r.status_code == 200
            done = c.post("/v1/completions", json={"model": "chat", "prompt": "Once upon", "max_tokens": 4})
            assert done.status_code == 200, done.text
            endpoint = c.get("/metrics").text
        deadline = time.monotonic() + 120
        while not any(r.get(mn.SPLIT) == "val" for r in running.metrics()):
            assert time.monotonic() < deadline, running.log_tail()
            time.sleep(0.1)
        jobs = observability.render()[0].decode()
    finally:
        queued.cancel()
        running.cancel()
    assert queued.state == "cancelled" and running.wait(timeout=120) == "cancelled"

    assert check(grafana.load("aios-training"), jobs) == []
    assert check(grafana.load("aios-serving"), endpoint) == []
    # and every family the exporters expose has a panel (a metric added later without one shows up here)
    assert uncharted(grafana.load("aios-training"), jobs) == set()
    assert uncharted(grafana.load("aios-serving"), endpoint) == set()
    # and the check can fail: a name or a label that nobody exposes is reported
    wrong = {
        "panels": [
            {"title": "t", "targets": [{"expr": 'sum by (job) (aios_job_los{job_name="x"})', "legendFormat": ""}]}
        ],
        "templating": {"list": [{"type": "query", "name": "v", "query": "label_values(aios_job_info, job_id)"}]},
    }
    assert check(wrong, jobs) == [
        "panel 't': aios_job_los is not exposed",
        "variable 'v': aios_job_info has no label ['job_id']",
    ]
