"""``%aios dataset``, ``%aios datasets`` and ``%aios dataset show`` in a real IPython shell."""

import base64
import re
import subprocess
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab.catalog import catalog
from aios_lab.data import Dataset
from aios_lab.render import Table, nbytes


def test_declare_from_kernel_variables_returns_a_handle(ip):
    ip.run_cell("import numpy as np\nX = np.random.default_rng(0).random((50, 3))\ny = np.arange(50) % 2")
    ds = ip.run_line_magic("aios", "dataset toy --from vars:X,y --split train=0.6,val=0.4 --seed 3")
    assert isinstance(ds, Dataset) and (ds.name, ds.version, ds.seed) == ("toy", 1, 3)
    assert ds.splits == {"train": 30, "val": 20}
    ip.run_cell("ds = %aios dataset toy --from vars:X,y --split train=0.6,val=0.4 --seed 3").raise_error()
    again = ip.user_ns["ds"]
    assert isinstance(again, Dataset) and again.version == 1 and again.hash == ds.hash
    assert "toy:v1" in repr(ds) and "<table" in ds._repr_html_()


def test_datasets_table_html_and_text(ip):
    table = ip.run_line_magic("aios", "datasets")
    assert isinstance(table, Table) and "no datasets yet" in str(table)
    ip.run_line_magic("aios", "dataset iris --from sklearn:iris")
    ip.run_line_magic("aios", "dataset iris --from sklearn:iris --seed 1")
    ip.run_line_magic("aios", "dataset wine --from sklearn:wine")
    table = ip.run_line_magic("aios", "datasets")
    rows = {r["name"]: r for r in table.records()}
    assert rows["iris"]["versions"] == "1, 2" and rows["wine"]["versions"] == "1"
    versions = ip.run_line_magic("aios", "datasets iris").records()
    assert [r["version"] for r in versions] == [1, 2]
    sizes = [d.nbytes for d in aios.datasets("iris")]
    assert rows["iris"]["disk"] == nbytes(sum(sizes)) and [r["disk"] for r in versions] == [nbytes(n) for n in sizes]
    assert nbytes(sum(d.nbytes for d in aios.datasets())) in table.title  # the total
    text = str(table)
    assert "iris" in text and "classification" in text and "float32[4]" in text and "sklearn:iris" in text
    html = table._repr_html_()
    assert html.startswith("<table") and "<td>iris</td>" in html


def test_dataset_show_draws_digits_as_images(ip):
    ip.run_line_magic("aios", "dataset digits --from sklearn:digits")
    view = ip.run_line_magic("aios", "dataset show digits")
    text = str(view)
    assert "schema" in text and "train  1439" in text and "class balance" in text
    html = view._repr_html_()
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) == 16 and all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "<svg" not in html


def test_dataset_show_draws_histograms_for_tabular_and_text_for_lm(ip, tmp_path):
    ip.run_line_magic("aios", "dataset wine --from sklearn:wine")
    view = ip.run_line_magic("aios", "dataset show wine:v1")
    assert view._repr_html_().count("<svg") == 8 and "alcohol" in str(view)
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    ip.run_line_magic("aios", f"dataset words --from text:{tmp_path}/*.txt --block 32 --split train=1")
    view = ip.run_line_magic("aios", "dataset show words")
    assert "quick brown" in str(view) and "<pre" in view._repr_html_() and "256 classes" in str(view)


def test_errors_are_one_line_usage_errors_and_write_nothing(ip):
    bad = [
        ("dataset x --from vars:missing,y", "'missing' is not defined in the kernel"),
        ("dataset x --from sklearn:digits --split train=0.5,val=0.1", "sum to 0.6"),
        ("dataset Bad --from sklearn:digits", "invalid dataset name"),
        ("dataset x --from nosuch:thing", "unknown source kind"),
        ("dataset x", "--from"),
        ("dataset show nope", "no dataset 'nope'"),
    ]
    for line, message in bad:
        with pytest.raises(UsageError, match=message) as err:
            ip.run_line_magic("aios", line)
        assert "\n" not in str(err.value)
    assert catalog().query("SELECT * FROM datasets") == []


def test_dataset_delete_verb_one_version_or_all(ip):
    ip.run_line_magic("aios", "dataset iris --from sklearn:iris")
    ip.run_line_magic("aios", "dataset iris --from sklearn:iris --seed 1")
    ip.run_line_magic("aios", "dataset wine --from sklearn:wine")
    out = ip.run_line_magic("aios", "dataset delete iris@1")
    assert str(out).startswith("deleted iris:v1 (") and "freed" in str(out)
    assert [d.ref for d in aios.datasets()] == ["iris:v2", "wine:v1"]
    with pytest.raises(UsageError, match="version 1 of dataset 'iris' was deleted"):
        ip.run_line_magic("aios", "dataset show iris:v1")
    assert "deleted wine:v1" in str(ip.run_line_magic("aios", "dataset delete wine"))
    with pytest.raises(UsageError, match="no dataset 'wine'") as e:
        ip.run_line_magic("aios", "dataset delete wine --force")
    assert "\n" not in str(e.value)
    assert [r["object"] for r in catalog().query("SELECT object FROM audit WHERE action='dataset.delete'")] == [
        "iris:v1",
        "wine:v1",
    ]
    assert "deleted iris:v2" in str(run_cli("dataset", "delete", "iris"))


def run_cli(*argv):
    out = subprocess.run([sys.executable, "-m", "aios_lab.cli", *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_help_lists_the_data_verbs(ip):
    text = str(ip.run_line_magic("aios", "help"))
    for line in ("%aios dataset ", "%aios datasets", "%aios dataset show", "%aios dataset delete"):
        assert line in text
    assert "--from SOURCE" in str(ip.run_line_magic("aios", "help dataset"))


def test_cli_lists_datasets(aios_home):
    import aios_lab as aios

    aios.dataset("toy", "vars:x,y", user_ns={"x": np.ones((10, 2)), "y": np.arange(10) % 2}, split="train=1")
    out = subprocess.run([sys.executable, "-m", "aios_lab.cli", "datasets"], capture_output=True, text=True)
    assert out.returncode == 0 and "toy" in out.stdout and "train=10" in out.stdout


def test_tokenized_jsonl_dataset_verb_and_show(ip, tmp_path):
    import json
    import os

    from aios_lab import registry

    registry.import_model("tiny", os.path.join(os.path.dirname(__file__), "fixtures", "hf", "qwen3"))
    chats = [
        {"messages": [{"role": "user", "content": f"What is {i}+1?"}, {"role": "assistant", "content": str(i + 1)}]}
        for i in range(6)
    ]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    ds = ip.run_line_magic(
        "aios",
        f"dataset math --from jsonl:{tmp_path}/chats.jsonl --tokenizer tiny:1 --format chat --block 128 --pack "
        "--split train=0.5,val=0.5",
    )
    assert isinstance(ds, Dataset) and ds.task == "lm" and ds.schema["packed"] and ds.tokenizer["model"] == "tiny"
    assert set(ds.extra_arrays("val")) == {"mask", "segments"} and sum(ds.schema["documents"].values()) == 6
    view = ip.run_line_magic("aios", "dataset show math --split val")
    assert "tokens per document (3 documents)" in str(view) and "⟦" in str(view) and "<svg" in view._repr_html_()
    assert "--tokenizer tiny:v1 --format chat --block 128 --pack" in str(ip.run_line_magic("aios", "datasets"))
    with pytest.raises(UsageError, match="add --tokenizer MODEL and --format") as err:
        ip.run_line_magic("aios", f"dataset other --from jsonl:{tmp_path}/chats.jsonl")
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="argument --format: invalid choice"):
        ip.run_line_magic("aios", f"dataset other --from jsonl:{tmp_path}/chats.jsonl --tokenizer tiny --format x")
    assert [d.name for d in aios.datasets()] == ["math"]
