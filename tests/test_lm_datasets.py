"""Language-model datasets from jsonl, tokenized with a registry model: loss masks, packing with segment ids,
padding, the recorded tokenizer and its check, dataset show, and bad input that writes nothing."""

import json
import os

import numpy as np
import pytest

import aios_lab as aios
from aios_lab import data, registry
from aios_lab.catalog import catalog
from aios_lab.data import lm_tokens, packing
from aios_lab.errors import AiosError, InvalidInput, NotFound

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
END = {"qwen3": "<|im_end|>", "llama": "<|eot_id|>", "gemma3": "<end_of_turn>\n", "gpt2": "\n"}
CHATS = [
    [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 4+4?"},
        {"role": "assistant", "content": "8"},
        {"role": "user", "content": "and 1+1?"},
        {"role": "assistant", "content": "It is 2."},
    ],
    [{"role": "user", "content": "What is 7+1?"}, {"role": "assistant", "content": "It is 8."}],
    [{"role": "user", "content": "What is 9+0?"}, {"role": "assistant", "content": "9"}],
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}],
]


def jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def one_line(fn, match, kind=AiosError):
    with pytest.raises(kind, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


def documents(ds, split="train"):
    """Every document of a split: (ids, learned flags per token, row) rebuilt from x, y, mask, segments."""
    x, y = ds.load(split)
    extra = ds.extra_arrays(split)
    mask, seg = extra["mask"][...], extra["segments"][...]
    out = []
    for r in range(len(x)):
        ids = np.flatnonzero(seg[r])
        assert ids.size == 0 or ids[-1] == ids.size - 1, "padding only at the end of a row"
        runs = seg[r][seg[r] > 0]
        assert list(dict.fromkeys(runs)) == list(range(1, runs.max() + 1)), "segments 1..k, each one run"
        for s in range(1, runs.max() + 1):
            sel = seg[r] == s
            out.append(([int(x[r][sel][0]), *map(int, y[r][sel])], [0, *map(int, mask[r][sel])], r))
            assert np.array_equal(x[r][sel][1:], y[r][sel][:-1]), "y is x shifted by one"
        pad = seg[r] == 0
        assert not mask[r][pad].any() and (x[r][pad] == ds.tokenizer["pad_id"]).all()
    return out


@pytest.mark.parametrize("family", ["qwen3", "llama"])  # {% generation %} blocks / the prefix rule
def test_chat_data_learns_only_the_assistant_and_packs_whole_documents(family, tmp_path, aios_home):
    registry.import_model(family, os.path.join(FIXTURES, family))
    source = jsonl(tmp_path / "chats.jsonl", [{"messages": m} for m in CHATS])
    ds = aios.dataset(
        "chats", f"jsonl:{source}", split="train=1.0", tokenizer=family, format="chat", block=128, pack=True
    )
    tok, _, sha = registry.load_tokenizer(family)
    assert ds.task == "lm" and ds.n_classes == 512 and ds.feature_shape == (128,) and ds.schema["packed"]
    assert ds.extra == {"mask": {"dtype": "uint8", "shape": [128]}, "segments": {"dtype": "int32", "shape": [128]}}
    assert ds.tokenizer["model"] == family and ds.tokenizer["version"] == 1 and ds.tokenizer["sha256"] == sha
    assert ds.schema["documents"] == {"train": len(CHATS)} and ds.schema["truncated"] == ds.schema["dropped"] == 0
    docs = documents(ds)
    assert len(docs) == len(CHATS) and len({r for *_, r in docs}) < len(CHATS)  # packed: fewer rows than documents
    expected = {tuple(tok.encode_chat(m, add_generation_prompt=False)): m for m in CHATS}
    for ids, learned, _ in docs:
        messages = expected.pop(tuple(ids))  # each document whole, exactly as the template renders it
        replies = "".join(m["content"] + END[family] for m in messages if m["role"] == "assistant")
        assert tok.decode([t for t, k in zip(ids, learned) if k], skip_special_tokens=False) == replies
        rest = tok.decode([t for t, k in zip(ids, learned) if not k], skip_special_tokens=False)
        assert all(m["content"] not in rest for m in messages if m["role"] == "assistant" and len(m["content"]) > 2)
        assert all(m["content"] in rest for m in messages if m["role"] == "user")
        if family == "qwen3":  # the template marks replies itself: the same mask as lm's own reader
            assert learned == tok.encode_chat_with_mask(messages)[1]
    assert expected == {}
    assert ds.schema["learned_tokens"]["train"] == sum(sum(k) for _, k, _ in docs)


def test_completion_and_text_formats_pad_one_document_per_row(tmp_path, aios_home):
    registry.import_model("tiny", os.path.join(FIXTURES, "gemma3"))
    tok = registry.load_tokenizer("tiny")[0]
    pairs = [("2+2=", "4"), ("The capital of France is", " Paris"), ("1+1=", "2"), ("Hello", " world")]
    source = jsonl(tmp_path / "c.jsonl", [{"prompt": p, "completion": c} for p, c in pairs])
    ds = aios.dataset("qa", f"jsonl:{source}", split="train=0.5,val=0.5", seed=3, tokenizer="tiny", format="completion")
    longest = max(len(tok.encode(p)) + len(tok.encode(c, add_special_tokens=False)) for p, c in pairs)
    assert ds.schema["block"] == -(-longest // 8) * 8 and not ds.schema["packed"]  # default: the longest, padded
    assert ds.splits == {"train": 2, "val": 2} and ds.schema["documents"] == {"train": 2, "val": 2}
    seen = []
    for split in ds.splits:
        docs = documents(ds, split)
        assert len(docs) == ds.splits[split] and sorted(r for *_, r in docs) == list(range(len(docs)))
        for ids, learned, _ in docs:
            prompt, answer = next((p, c) for p, c in pairs if ids[: len(tok.encode(p))] == tok.encode(p))
            p_ids = tok.encode(prompt)
            assert ids == p_ids + tok.encode(answer, add_special_tokens=False) + [tok.eos_ids[0]]
            assert learned == [0] * len(p_ids) + [1] * (len(ids) - len(p_ids))  # the completion and eos only
            seen.append(prompt)
    assert sorted(seen) == sorted(p for p, _ in pairs)  # every document in exactly one split

    text = jsonl(tmp_path / "t.jsonl", [{"text": "The licensee may copy the Program."}, {"text": "Hi."}])
    ds = aios.dataset("txt", f"jsonl:{text}", split="train=1.0", tokenizer="tiny:1", format="text", block=8)
    docs = documents(ds)
    for ids, learned, _ in docs:
        assert learned == [0] + [1] * (len(ids) - 1) and (ids[-1] == tok.eos_ids[0] or len(ids) == 9)
        assert ids[0] == tok.bos_id  # encoded as a prompt is: with the tokenizer's BOS
    assert ds.schema["truncated"] == 1 and max(len(ids) for ids, *_ in docs) == 9  # cut to the block
    x, y = aios.data.get("txt").load("train")
    assert x.dtype == y.dtype == np.int32 and x.shape == (2, 8)


def test_packing_best_fit_keeps_documents_whole():
    docs = [([1] * n, [1] * n) for n in (9, 5, 4, 3, 2, 7)]
    rows = packing.layout(docs, block=10, pack=True)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(len(docs[i][0]) - 1 for i in r) <= 10 for r in rows) and len(rows) == 3
    built = packing.build(docs, 10, True, pad_id=0)
    assert sorted(packing.document_lengths(built.segments).tolist()) == sorted(n - 1 for n in (9, 5, 4, 3, 2, 7))
    assert packing.trim(([1] * 20, [1] * 20), 10) == (([1] * 11, [1] * 11), True)
    assert lm_tokens.spans_to_mask([(0, 2), (2, 4), (4, 6), (6, 6)], [(2, 5)]) == [0, 1, 1, 0]


def test_a_dataset_remembers_its_tokenizer_and_training_can_refuse_another(tmp_path, aios_home):
    registry.import_model("qwen", os.path.join(FIXTURES, "qwen3"))
    registry.import_model("llama", os.path.join(FIXTURES, "llama"))
    source = jsonl(tmp_path / "chats.jsonl", [{"messages": m} for m in CHATS])
    ds = aios.dataset("chats", f"jsonl:{source}", split="train=1.0", tokenizer="qwen", format="chat", pack=True)
    assert ds.schema["block"] == 128  # packed default: the model's context (here under 2048)
    data.check_tokenizer(ds, registry.tokenizer_sha("qwen"))
    one_line(lambda: data.check_tokenizer(ds, registry.tokenizer_sha("llama")), "tokenized for another tokenizer")
    (tmp_path / "t.txt").write_text("some bytes of text " * 20)
    text = aios.dataset("bytes", f"text:{tmp_path / 't.txt'}", block=16)
    one_line(
        lambda: data.check_tokenizer(text, registry.tokenizer_sha("qwen")), "no model tokenizer made", InvalidInput
    )
    # the same content is the same version; another tokenizer is another version
    again = aios.dataset("chats", f"jsonl:{source}", split="train=1.0", tokenizer="qwen:1", format="chat", pack=True)
    assert again.version == ds.version == 1
    other = aios.dataset("chats", f"jsonl:{source}", split="train=1.0", tokenizer="llama", format="chat", pack=True)
    assert other.version == 2 and data.tokenizer_of(other)["model"] == "llama"
    assert ds.to_json()["tokenizer"]["sha256"] == registry.tokenizer_sha("qwen")
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from aios_lab.data.loader import Loader

    one = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec("data"))
    batch = Loader(ds, "train", batch_size=2, sharding=one).host_batch(0)  # the trainer reads x, y as before
    assert [a.shape for a in batch] == [(2, 128), (2, 128)] and batch[0].dtype == np.int32


def test_dataset_show_has_a_length_histogram_and_a_marked_example(tmp_path, aios_home):
    registry.import_model("qwen", os.path.join(FIXTURES, "qwen3"))
    source = jsonl(tmp_path / "chats.jsonl", [{"messages": m} for m in CHATS])
    ds = aios.dataset("chats", f"jsonl:{source}", split="train=1.0", tokenizer="qwen", format="chat", block=96)
    view = ds.show()
    text = str(view)
    assert f"tokens per document ({len(CHATS)} documents)" in text
    assert "⟦masked⟧ = no loss" in text and "⟦<|im_start|>system" in text and "<|im_end|>⟦" in text
    assert "mask" in text and "segments" in text and "tokenizer qwen:v1" in text
    html = view._repr_html_()
    assert "<svg" in html and "color:#888" in html and "<b>" in html
    assert any(learned for _, learned in view.example) and any(not learned for _, learned in view.example)
    registry.delete("qwen")
    assert "token ids shown" in str(ds.show())  # the tokenizer's model is gone: ids instead of text


def test_bad_language_model_data_is_a_one_line_error_that_writes_nothing(tmp_path, aios_home):
    registry.import_model("qwen", os.path.join(FIXTURES, "qwen3"))
    good = jsonl(tmp_path / "good.jsonl", [{"messages": m} for m in CHATS])
    declare = lambda src, **kw: lambda: aios.dataset("d", src, **{"tokenizer": "qwen", "format": "chat", **kw})
    one_line(declare(f"jsonl:{good}", block=4096), "longer than qwen:v1's context of 128", InvalidInput)
    one_line(declare(f"jsonl:{good}", format=None), "add --tokenizer MODEL and --format", InvalidInput)
    one_line(declare(f"jsonl:{good}", format="prose"), "--format prose", InvalidInput)
    one_line(declare(f"jsonl:{good}", tokenizer="nope"), "no model named 'nope'", NotFound)
    one_line(declare(f"jsonl:{tmp_path / 'none.jsonl'}"), "no file matches", InvalidInput)
    one_line(lambda: aios.dataset("d", f"jsonl:{good}"), "add --tokenizer", InvalidInput)
    one_line(declare("sklearn:iris"), "tokenizes jsonl:PATH sources", InvalidInput)
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n')
    one_line(declare(f"jsonl:{tmp_path / 'bad.jsonl'}"), "line 2 of bad.jsonl is not JSON", InvalidInput)
    (tmp_path / "nokey.jsonl").write_text('{"text": "hi"}\n')
    one_line(declare(f"jsonl:{tmp_path / 'nokey.jsonl'}"), "line 1 of nokey.jsonl has no 'messages'", InvalidInput)
    (tmp_path / "role.jsonl").write_text('{"messages": [{"role": "user"}]}\n')
    one_line(declare(f"jsonl:{tmp_path / 'role.jsonl'}"), "message 0 needs a string 'role' and 'content'", InvalidInput)
    quiet = jsonl(tmp_path / "quiet.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3)
    one_line(declare(f"jsonl:{quiet}"), "no record .* has a token to learn", InvalidInput)
    registry.import_model("plain", os.path.join(FIXTURES, "llama"))  # a template without {% generation %}
    first = jsonl(tmp_path / "first.jsonl", [{"messages": [{"role": "assistant", "content": "hi"}]}])
    one_line(declare(f"jsonl:{first}", tokenizer="plain"), "starts with an assistant message", InvalidInput)
    assert catalog().query("SELECT * FROM datasets") == [] and not (aios_home / "datasets").exists()
