"""``%aios dataset``, ``%aios datasets`` and ``%aios dataset show`` in a real IPython shell."""

import base64
import re
import subprocess
import sys

import numpy as np
import pytest
from IPython.core.error import UsageError

from aios_lab.catalog import catalog
from aios_lab.data import Dataset
from aios_lab.render import Table


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
    table = ip.run_line_magic("aios", "datasets")
    assert [r["version"] for r in table.records()] == [1, 2]
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


def test_help_lists_the_data_verbs(ip):
    text = str(ip.run_line_magic("aios", "help"))
    for line in ("%aios dataset ", "%aios datasets", "%aios dataset show"):
        assert line in text
    assert "--from SOURCE" in str(ip.run_line_magic("aios", "help dataset"))


def test_cli_lists_datasets(aios_home):
    import aios_lab as aios

    aios.dataset("toy", "vars:x,y", user_ns={"x": np.ones((10, 2)), "y": np.arange(10) % 2}, split="train=1")
    out = subprocess.run([sys.executable, "-m", "aios_lab.cli", "datasets"], capture_output=True, text=True)
    assert out.returncode == 0 and "toy" in out.stdout and "train=10" in out.stdout
