"""Release gates on the real registry: promote evaluates through the loader and moves an alias only when every
condition holds; rollback steps back through the alias history; protected aliases; one-line bad input."""

import functools
import importlib
import json
import os

import jax
import numpy as np
import optax
import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab import registry
from aios_lab.catalog import catalog
from aios_lab.errors import Conflict, InvalidInput, NotFound
from aios_lab.registry import GateFailed, conditions
from aios_lab.verbs import run

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target


@functools.lru_cache(maxsize=1)
def _fitted():
    """An mlp fitted in-process on all of digits (full batch, 150 adam steps), and random parameters."""
    from aios_lab.train.models import build, resolve

    x, y = _digits()
    spec = resolve("mlp", width=32)
    model = build(spec, "classification", 10, (8, 8))
    params = model.init(jax.random.key(0), x[:2])
    random = jax.tree.map(np.asarray, params)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(p, s):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x / 16), y).mean()
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    for _ in range(150):
        p, s = step(p, s)
    return spec, random, jax.tree.map(np.asarray, p)


def publish(good: bool, **kw):
    spec, random, fitted = _fitted()
    return registry.publish_params(
        "digits", spec, fitted if good else random, task="classification", input_shape=(8, 8), n_outputs=10, **kw
    )


def declare():
    x, y = _digits()
    return aios.dataset("digits", {"x": x / 16, "y": y}, split="train=0.8,test=0.2")


def audit(action):
    return [
        (r["object"], json.loads(r["details"]))
        for r in catalog().query("SELECT * FROM audit ORDER BY id")
        if r["action"] == action
    ]


def alias_of(alias="production"):
    return registry.resolve("digits", alias)


def test_gated_promote_moves_only_when_every_condition_holds_and_records_both(aios_home):
    declare()
    publish(False, alias="production")  # v1: the first publish may create production
    publish(True, alias="staging")  # v2, fitted
    publish(False)  # v3, random
    with pytest.raises(GateFailed, match=r"promote refused: digits:v3 on digits@1:test: accuracy 0\.\d+ fails") as e:
        aios.promote("digits", "production", version=3, require="accuracy>=0.8", on="digits")
    assert "\n" not in str(e.value) and "digits@production stays at v1" in str(e.value)
    assert alias_of() == 1 and e.value.promotion.decision == "refused"

    p = aios.promote(
        "digits", "production", from_="staging", require="accuracy>=0.8,latency_p99_ms<=5000", on="digits:test"
    )
    assert p.promoted and (p.version, p.previous, p.data) == (2, 1, "digits@1:test") and alias_of() == 2
    assert p.metrics["accuracy"] >= 0.8 and 0 < p.metrics["latency_p50_ms"] <= p.metrics["latency_p99_ms"]
    assert set(p.metrics) == {"loss", "accuracy", "latency_p50_ms", "latency_p99_ms", "latency_mean_ms"}
    assert [r["ok"] for r in p.results] == [True, True]
    # the measured numbers are the loader's: the same as predicting the split by hand
    ds = aios_lab_data_get()
    x, y = ds.load("test")
    by_hand = float(np.mean(registry.load("digits", 2).predict(x).argmax(-1) == y))
    assert p.metrics["accuracy"] == pytest.approx(by_hand)

    v2, v3 = registry.get("digits", 2), registry.get("digits", 3)
    assert [e["decision"] for e in v3.evaluations] == ["refused"] and not v3.evaluations[0]["passed"]
    assert [e["decision"] for e in v2.evaluations] == ["promoted"] and v2.evaluations[0]["alias"] == "production"
    assert v2.evaluations[0]["metrics"]["accuracy"] == pytest.approx(p.metrics["accuracy"])
    assert "evaluation" in str(v2.table()) and "promoted production" in str(v2.table())
    assert v2.metrics == {}  # metrics.json on disk is untouched: the version is immutable
    decisions = [(o, d["decision"], d["failed"]) for o, d in audit("promote")]
    assert decisions == [("digits@production", "refused", ["accuracy>=0.8"]), ("digits@production", "promoted", [])]
    evaluated = audit("promote.evaluate")
    assert [o for o, _ in evaluated] == ["digits:v3", "digits:v2"] and evaluated[1][1]["data"] == "digits@1:test"
    assert [d.get("via") for o, d in audit("alias") if o == "digits@production"] == [None, "promote"]

    # a latency gate no model can pass refuses just the same
    with pytest.raises(GateFailed, match="latency_p99_ms"):
        aios.promote("digits", "production", version=3, require="latency_p99_ms<=0.000001", on="digits")
    assert alias_of() == 2


def aios_lab_data_get():
    from aios_lab.data import get

    return get("digits")


def test_without_require_promote_is_a_plain_recorded_move_and_rollback_walks_back(aios_home):
    for _ in range(3):
        publish(False)
    assert aios.promote("digits", "production", version=1).decision == "promoted"
    aios.promote("digits", "production", version=2)
    aios.promote("digits", "production", version=3)
    assert aios.promote("digits", "production", version=3).decision == "unchanged"
    assert aios.rollback("digits", "production").version == 2
    assert aios.rollback("digits").version == 1  # production by default; again goes further back
    with pytest.raises(Conflict, match="no earlier version to roll back to"):
        aios.rollback("digits")
    assert alias_of() == 1
    moves = [(h["action"], h["previous"], h["version"]) for h in registry.alias_history("digits", "production")]
    assert moves == [("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2), ("rollback", 2, 1)]
    assert [(d["previous"], d["version"]) for _, d in audit("rollback")] == [(3, 2), (2, 1)]
    aios.promote("digits", "production", version=3)  # then a new promote, and rollback undoes it
    assert aios.rollback("digits").version == 1
    with pytest.raises(NotFound, match="no alias 'staging'"):
        aios.rollback("digits", "staging")


def test_protected_aliases_move_only_by_promote_or_rollback(aios_home):
    publish(False, alias="production")
    publish(False, alias="staging")
    with pytest.raises(
        Conflict, match=r"digits@production is protected \(now v1\).*%aios promote digits --to production"
    ):
        registry.set_alias("digits", "production", 2)
    with pytest.raises(Conflict, match="is protected"):
        registry.set_alias("digits", "production", None)
    with pytest.raises(Conflict, match="publish without --alias production, then `%aios promote"):
        publish(False, alias="production")
    assert registry.versions("digits") == [1, 2] and alias_of() == 1  # the refused publish wrote nothing
    assert not any((aios_home / "tmp").iterdir())
    registry.set_alias("digits", "production", 1)  # pointing it where it is moves nothing
    # any alias can be protected; then it too moves only by promote
    registry.set_alias("digits", "staging", 1)
    registry.protect("digits", "staging")
    assert registry.protected("digits") == ["production", "staging"]
    with pytest.raises(Conflict, match="digits@staging is protected"):
        registry.set_alias("digits", "staging", 2)
    aios.promote("digits", "staging", version=2)
    assert alias_of("staging") == 2
    registry.protect("digits", "staging", on=False)
    registry.set_alias("digits", "staging", 1)
    with pytest.raises(InvalidInput, match="production is always protected"):
        registry.protect("digits", "production", on=False)
    assert [o for o, _ in audit("alias.protect")] == ["digits@staging"]
    assert [o for o, _ in audit("alias.unprotect")] == ["digits@staging"]
    # a forced delete still removes a protected alias with its version (recorded as a move)
    registry.delete("digits", 1, force=True)
    assert registry.alias_history("digits", "production")[-1]["action"] == "delete"


def test_bad_require_or_data_is_one_line_and_nothing_moves_or_is_recorded(aios_home):
    declare()
    publish(False, alias="production")
    publish(True)
    before = catalog().one("SELECT COUNT(*) FROM audit")[0]
    cases = [
        (dict(require="accuracy>>0.9", on="digits"), "does not parse"),
        (dict(require="accuracy>=", on="digits"), "does not parse"),
        (dict(require="accuracy>=0.9,", on="digits"), "does not parse"),
        (dict(require="f1>=0.9", on="digits"), "'f1', which is no metric"),
        (dict(require="canary_error_rate<=0.01", on="digits"), "no canary of digits v2 has run"),
        (dict(require="mse<=0.1", on="digits"), "'mse', which a classification model does not report"),
        (dict(require="accuracy>=0.9"), "add --on DATASET"),
        (dict(require="accuracy>=0.9", on="digits:nope"), "has no split 'nope'"),
        (dict(require="accuracy>=0.9", on="nodata"), "no dataset 'nodata'"),
        (dict(from_="staging"), "no alias 'staging'"),
        (dict(version=9), "has no version 9"),
        (dict(version=2, from_="production"), "not both"),
    ]
    for kw, match in cases:
        with pytest.raises((InvalidInput, NotFound)) as e:
            aios.promote("digits", "production", **{"version": 2, **kw} if "from_" not in kw else kw)
        assert match in str(e.value) and "\n" not in str(e.value), (kw, str(e.value))
    assert alias_of() == 1
    assert catalog().one("SELECT COUNT(*) FROM audit")[0] == before
    assert catalog().one("SELECT COUNT(*) FROM evaluations")[0] == 0


def test_hooks_let_serving_read_metrics_and_guard_an_alias(aios_home, monkeypatch):
    publish(False, alias="production")
    publish(False)
    monkeypatch.setitem(conditions.PROVIDERS, "canary_error_rate", lambda model, version: 0.5 if version == 2 else 0.0)
    with pytest.raises(GateFailed, match="canary_error_rate 0.5 fails canary_error_rate<=0.01"):
        aios.promote("digits", "production", version=2, require="canary_error_rate<=0.01")
    monkeypatch.setattr(importlib.import_module("aios_lab.registry.promote"), "GUARDS", [])
    registry.register_guard(lambda m, a, action: f"a canary splits {m}@{a}; end it first")
    with pytest.raises(Conflict, match="a canary splits digits@production; end it first"):
        aios.promote("digits", "production", version=2)
    with pytest.raises(Conflict, match="a canary splits"):
        aios.rollback("digits")
    assert alias_of() == 1


def test_a_language_model_is_gated_on_perplexity(tmp_path, aios_home):
    registry.import_model("tiny", os.path.join(FIXTURES, "llama"), alias="production")
    registry.import_model("tiny", os.path.join(FIXTURES, "llama"))
    source = tmp_path / "t.jsonl"
    source.write_text("".join(json.dumps({"text": f"The licensee may copy {i} files."}) + "\n" for i in range(12)))
    aios.dataset("docs", f"jsonl:{source}", split="train=0.5,test=0.5", tokenizer="tiny", format="text")
    p = aios.promote("tiny", "production", version=2, require="perplexity<=1e9,accuracy>=0", on="docs:test", samples=5)
    assert p.promoted and set(p.metrics) >= {"loss", "accuracy", "perplexity"}
    assert p.metrics["perplexity"] == pytest.approx(np.exp(p.metrics["loss"]))
    with pytest.raises(GateFailed, match="perplexity"):
        aios.promote("tiny", "production", version=1, require="perplexity<=1.0001", on="docs:test", samples=5)


def test_verbs_promote_rollback_alias_protect_and_cli_exit_code(aios_home, capsys):
    from aios_lab.cli import main

    declare()
    publish(False, alias="production")
    publish(True, alias="staging")
    shown = run('promote digits --to production --from staging --require "accuracy>=0.8" --on digits:test --samples 5')
    assert "digits:v2 -> production: promoted (was v1)" in str(shown) and "accuracy>=0.8" in str(shown)
    assert "<table" in shown._repr_html_()
    assert "rolled back to v1" in str(run("rollback digits production"))
    with pytest.raises(UsageError, match="promote refused") as e:
        run('promote digits --to production --version 1 --require "accuracy>=0.99" --on digits')
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="is protected"):
        run("model alias digits production 2")
    assert "staging" in str(run("alias protect digits staging"))
    assert main("promote digits --to production --version 1 --require accuracy>=0.99 --on digits".split()) == 2
    assert "promote refused" in capsys.readouterr().err
    assert "promote" in str(run("help"))
