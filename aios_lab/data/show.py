"""``%aios dataset show`` (schema, split sizes, class balance, a picture of samples) and the ``%aios datasets`` table.

The picture needs no plotting library: image-shaped features become small PNG tiles (encoded here
with zlib), other features SVG histograms, text datasets decoded snippets. In a terminal the same
view is text, with histograms as one-line sparklines.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..render import Table, age, fmt, nbytes

N_SAMPLES = 16
N_HIST = 8
BINS = 20
TILE_PX = 64
SPARK = " ▁▂▃▄▅▆▇█"
MAX_ROWS = 10_000  # rows read for the token-length histogram
MASK_OPEN, MASK_CLOSE = "⟦", "⟧"
MASKED_STYLE = "color:#888;background:#eee"
EXTRA_NOTES = {"mask": "1 where y is learned (loss)", "segments": "document within the row, 0 = padding"}


@dataclass
class Show:
    """What ``dataset show`` renders: tables, plus sample pictures (PNG tiles or SVG histograms)."""

    title: str
    summary: Table
    schema: Table
    splits: Table
    balance: Table | None
    tiles: list[tuple[bytes, str]] = field(default_factory=list)  # (png, caption) per sample
    hists: list[tuple[str, np.ndarray, float, float]] = field(default_factory=list)  # (name, counts, lo, hi)
    texts: list[str] = field(default_factory=list)
    lengths: tuple[np.ndarray, float, float] | None = None  # tokens per document: (counts, lo, hi)
    example: list[tuple[str, bool]] = field(default_factory=list)  # one decoded document: (text, learned) runs
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [self.title, str(self.summary), str(self.schema), str(self.splits)]
        if self.balance is not None:
            parts.append(str(self.balance))
        if self.hists:
            width = max(len(n) for n, *_ in self.hists)
            parts.append(
                "histograms (train):\n"
                + "\n".join(f"  {n.ljust(width)}  {fmt(lo):>8} {sparkline(c)} {fmt(hi)}" for n, c, lo, hi in self.hists)
            )
        if self.tiles:
            parts.append(
                f"{len(self.tiles)} sample images (shown as pictures in a notebook); labels: "
                + " ".join(c for _, c in self.tiles)
            )
        if self.texts:
            parts.append("samples:\n" + "\n".join(f"  {t!r}" for t in self.texts))
        if self.lengths is not None:
            counts, lo, hi = self.lengths
            spark = f"{fmt(lo)} {sparkline(counts)} {fmt(hi)}"
            parts.append(f"tokens per document ({int(counts.sum())} documents):  {spark}")
        if self.example:
            marked = "".join(t if learned else f"{MASK_OPEN}{t}{MASK_CLOSE}" for t, learned in self.example)
            parts.append(f"one document, {MASK_OPEN}masked{MASK_CLOSE} = no loss:\n{marked}")
        parts += self.notes
        return "\n\n".join(parts)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        out = [
            f"<div class='aios-dataset-show'><h4>{html.escape(self.title)}</h4>",
            self.summary._repr_html_(),
            self.schema._repr_html_(),
            self.splits._repr_html_(),
        ]
        if self.balance is not None:
            out.append(self.balance._repr_html_())
        if self.tiles:
            figs = "".join(
                f"<figure style='margin:2px;text-align:center'><img src='data:image/png;base64,"
                f"{base64.b64encode(png).decode()}' style='image-rendering:pixelated' alt='sample'/>"
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
                for png, cap in self.tiles
            )
            out.append(f"<div style='display:flex;flex-wrap:wrap'>{figs}</div>")
        if self.hists:
            out.append(
                "<div style='display:flex;flex-wrap:wrap'>"
                + "".join(histogram_svg(n, c, lo, hi) for n, c, lo, hi in self.hists)
                + "</div>"
            )
        if self.texts:
            out.append("".join(f"<pre style='white-space:pre-wrap'>{html.escape(t)}</pre>" for t in self.texts))
        if self.lengths is not None:
            counts, lo, hi = self.lengths
            out.append(histogram_svg(f"tokens per document ({int(counts.sum())})", counts, lo, hi, w=320))
        if self.example:
            runs = "".join(
                f"<b>{html.escape(t)}</b>" if learned else f"<span style='{MASKED_STYLE}'>{html.escape(t)}</span>"
                for t, learned in self.example
            )
            out.append(
                f"<div>one document; <span style='{MASKED_STYLE}'>grey</span> = masked (no loss), "
                f"<b>bold</b> = learned</div><pre style='white-space:pre-wrap'>{runs}</pre>"
            )
        out += [f"<div>{html.escape(n)}</div>" for n in self.notes]
        return "".join(out) + "</div>"


def show(ds: Any, split: str | None = None) -> Show:
    """Build the view of ``ds`` from its schema and a few rows of one split (train by default)."""
    split = split or ("train" if "train" in ds.splits else next(iter(ds.splits)))
    ds._check_split(split)
    schema = ds.schema
    summary = summary_table(ds)
    names = schema.get("feature_names")
    fields = Table(
        ["array", "dtype", "shape per sample", "notes"],
        [
            (
                "x",
                schema["x"]["dtype"],
                tuple(schema["x"]["shape"]) or "()",
                f"features: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
                if names
                else "tokens"
                if schema["task"] == "lm"
                else "features",
            ),
            (
                "y",
                schema["y"]["dtype"],
                tuple(schema["y"]["shape"]) or "()",
                f"target {schema.get('target_name', '')}".strip() + _task_note(schema),
            ),
            *(
                (k, v["dtype"], tuple(v["shape"]), EXTRA_NOTES.get(k, "per row"))
                for k, v in (schema.get("extra") or {}).items()
            ),
        ],
        title="schema",
    )
    total = sum(ds.splits.values())
    splits = Table(
        ["split", "rows", "fraction"], [(k, v, f"{v / total:.1%}") for k, v in ds.splits.items()], title="splits"
    )
    view = Show(f"dataset {ds.ref}", summary, fields, splits, _balance(ds))
    xa, ya = ds.arrays(split)
    x, y = xa[:N_SAMPLES], ya[:N_SAMPLES]
    classes = schema.get("classes")
    label = (
        (lambda v: classes[int(v)] if classes and int(v) < len(classes) else str(int(v)))
        if ds.task == "classification"
        else (lambda v: fmt(float(np.ravel(v)[0])))
    )
    if ds.task == "lm" and schema.get("tokenizer"):
        _tokens_view(view, ds, split, x, y)
    elif ds.task == "lm":
        view.texts = [bytes(np.asarray(row, dtype=np.uint8)).decode("utf-8", "replace") for row in x[:3]]
    elif _image_shaped(tuple(schema["x"]["shape"])):
        lo, hi = float(np.min(x)), float(np.max(x))
        view.tiles = [(png_encode(_tile(img, lo, hi)), label(t)) for img, t in zip(x, y)]
    else:
        view.hists = _histograms(xa, names)
        if ds.task == "regression":
            view.hists += _histograms(ya, [f"target {schema.get('target_name', 'y')}".strip()], limit=1)
    return view


def _tokens_view(view: Show, ds: Any, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """A tokenized dataset: the histogram of tokens per document, and its first document decoded with the
    masked part marked (decoded with the dataset's tokenizer; token ids if that model version is gone)."""
    from ..errors import AiosError
    from .packing import document_lengths

    extra = ds.extra_arrays(split)
    segments = np.asarray(extra["segments"][:MAX_ROWS])
    lengths = document_lengths(segments)
    if lengths.size:
        lo, hi = float(lengths.min()), float(lengths.max())
        counts, _ = np.histogram(lengths, bins=BINS, range=(lo, hi if hi > lo else lo + 1))
        view.lengths = (counts, lo, hi)
    seg, mask = segments[0], np.asarray(extra["mask"][0])
    sel = seg == 1
    ids = [int(x[0][sel][0]), *map(int, y[0][sel])]
    learned = [False, *map(bool, mask[sel])]
    info = ds.schema["tokenizer"]
    try:
        from ..registry import load_tokenizer

        tok = load_tokenizer(info["model"], info["version"])[0]
        decode = lambda run: tok.decode(run, skip_special_tokens=False)
    except AiosError:
        decode = lambda run: " ".join(map(str, run)) + " "
        view.notes.append(f"{info['model']}:v{info['version']} is gone from the registry: token ids shown")
    runs: list[tuple[list[int], bool]] = []
    for t, flag in zip(ids, learned):
        if runs and runs[-1][1] == flag:
            runs[-1][0].append(t)
        else:
            runs.append(([t], flag))
    view.example = [(decode(run), flag) for run, flag in runs]
    schema = ds.schema
    view.notes.append(
        f"{sum(schema['documents'].values())} documents in {sum(ds.splits.values())} rows of {schema['block']} "
        f"tokens ({'packed' if schema['packed'] else 'padded'}); {schema['truncated']} cut to the block, "
        f"{schema['dropped']} dropped with nothing to learn"
    )


def summary_table(ds: Any) -> Table:
    """One row about a dataset version: what ``ds`` shows as in a notebook (reads no data)."""
    return Table(
        ["dataset", "task", "classes", "splits", "x", "size on disk", "hash", "source", "seed", "age"],
        [
            (
                ds.ref,
                ds.task,
                ds.n_classes,
                " ".join(f"{k}={v}" for k, v in ds.splits.items()),
                f"{ds.feature_dtype}{list(ds.feature_shape)}",
                nbytes(ds.nbytes),
                ds.hash[:12],
                ds.source,
                ds.seed,
                age(ds.created),
            )
        ],
    )


def _task_note(schema: dict) -> str:
    if schema["task"] == "classification":
        return f"; {schema['n_classes']} classes"
    if schema["task"] == "lm" and schema.get("tokenizer"):
        tok = schema["tokenizer"]
        made = f"{tok['model']}:v{tok['version']}"
        return f"; next token, vocab {schema['n_classes']}, block {schema.get('block')}, tokenizer {made}"
    if schema["task"] == "lm":
        return f"; next byte, 256 classes, block {schema.get('block')}"
    return "; regression"


def _balance(ds: Any) -> Table | None:
    """Rows per class per split (classification only; reads only the targets)."""
    if ds.task != "classification":
        return None
    k = ds.n_classes
    counts = {s: np.bincount(np.asarray(ds.arrays(s)[1][...]).ravel(), minlength=k) for s in ds.splits}
    classes = ds.schema.get("classes") or [str(i) for i in range(k)]
    rows = [
        (
            classes[i],
            *(int(c[i]) for c in counts.values()),
            f"{sum(int(c[i]) for c in counts.values()) / max(1, sum(ds.splits.values())):.1%}",
        )
        for i in range(k)
    ]
    return Table(["class", *counts, "share"], rows, title="class balance")


def _image_shaped(shape: tuple[int, ...]) -> bool:
    return (len(shape) == 2 and min(shape) >= 4) or (len(shape) == 3 and shape[2] in (1, 3, 4) and min(shape[:2]) >= 4)


def _tile(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """One sample as uint8 pixels, scaled up by an integer factor to about TILE_PX."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    img = np.clip((img - lo) / ((hi - lo) or 1.0), 0, 1)
    pix = (255 - img * 255 if img.ndim == 2 else img * 255).astype(np.uint8)  # grey: dark ink on white
    scale = max(1, TILE_PX // max(pix.shape[:2]))
    return np.repeat(np.repeat(pix, scale, axis=0), scale, axis=1)


def png_encode(pixels: np.ndarray) -> bytes:
    """A PNG file of uint8 pixels, ``(h, w)`` grey or ``(h, w, 3)`` RGB."""
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(pixels, dtype=np.uint8))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _histograms(arr: Any, names: list[str] | None, limit: int = N_HIST) -> list[tuple[str, np.ndarray, float, float]]:
    """Histograms of the first ``limit`` feature columns over at most 10,000 rows."""
    n = min(arr.shape[0], 10_000)
    sample = np.asarray(arr[:n], dtype=np.float64).reshape(n, -1)
    out = []
    for i in range(min(limit, sample.shape[1])):
        col = sample[:, i]
        lo, hi = float(col.min()), float(col.max())
        counts, _ = np.histogram(col, bins=BINS, range=(lo, hi if hi > lo else lo + 1))
        out.append((names[i] if names and i < len(names) else f"x[{i}]", counts, lo, hi))
    return out


def sparkline(counts: np.ndarray) -> str:
    top = max(1, int(counts.max()))
    return "".join(SPARK[int(np.ceil(c / top * (len(SPARK) - 1)))] for c in counts)


def histogram_svg(name: str, counts: np.ndarray, lo: float, hi: float, w: int = 160, h: int = 70) -> str:
    """A small inline SVG bar chart with its feature name and range."""
    top = max(1, int(counts.max()))
    bw = w / len(counts)
    bars = "".join(
        f"<rect x='{i * bw:.1f}' y='{h - 14 - c / top * (h - 28):.1f}' width='{bw - 1:.1f}' "
        f"height='{c / top * (h - 28):.1f}' fill='#4a86c5'/>"
        for i, c in enumerate(counts)
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' style='margin:4px'>"
        f"<text x='0' y='10' font-size='10'>{html.escape(name[:28])}</text>{bars}"
        f"<text x='0' y='{h - 2}' font-size='9'>{html.escape(fmt(lo))}</text>"
        f"<text x='{w}' y='{h - 2}' font-size='9' text-anchor='end'>{html.escape(fmt(hi))}</text></svg>"
    )


def datasets_table(name: str | None = None) -> Table:
    """``%aios datasets``: one row per dataset with its disk use over all versions (one per version with ``name``)."""
    from .dataset import datasets

    found = datasets(name)
    if name is not None:
        rows = [
            (d.version, d.task, d.n_classes, _splits(d), _x(d), nbytes(d.nbytes), d.source, d.hash[:12], age(d.created))
            for d in found
        ]
        return Table(
            ["version", "task", "classes", "splits", "x", "disk", "source", "hash", "age"],
            rows,
            title=f"versions of dataset {name}",
            empty=f"no dataset {name!r}: `%aios dataset {name} --from SOURCE` declares one",
        )
    by_name: dict[str, list] = {}
    for d in found:
        by_name.setdefault(d.name, []).append(d)
    rows = []
    for ds_name, versions in by_name.items():
        d = versions[-1]  # the newest version describes the dataset
        rows.append(
            (
                ds_name,
                ", ".join(str(v.version) for v in versions),
                d.task,
                d.n_classes,
                _splits(d),
                _x(d),
                nbytes(sum(v.nbytes for v in versions)),
                d.source,
                age(d.created),
            )
        )
    total = sum(d.nbytes for d in found)
    return Table(
        ["name", "versions", "task", "classes", "splits", "x", "disk", "source", "age"],
        rows,
        title=f"datasets ({nbytes(total)} on disk)" if found else "datasets",
        empty="no datasets yet: `%aios dataset NAME --from SOURCE` declares one",
    )


def _splits(d: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in d.splits.items())


def _x(d: Any) -> str:
    return f"{d.feature_dtype}{list(d.feature_shape)}"
