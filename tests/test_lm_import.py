"""Hugging Face checkpoints into the registry: streamed import per family, offline hf: from a real cache layout,
bad checkpoints that write nothing, verified loading, generation equal to the checkpoint's, the LM verbs and chat."""

import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest
from IPython.core.error import UsageError

import aios_lab as aios
from aios_lab import lm, registry
from aios_lab.catalog import catalog
from aios_lab.compress import params_file
from aios_lab.errors import AiosError, Busy, InvalidInput, NotFound
from aios_lab.registry import lm_artifact
from aios_lab.registry.params_stream import ParamsWriter, read_params
from aios_lab.verbs import Context, run

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
FAMILIES = sorted(os.listdir(FIXTURES))


def MODEL_FILES(d):
    return [f for f in sorted(os.listdir(d)) if not f.startswith("expected")]


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fixture(family):
    return os.path.join(FIXTURES, family)


def copy_fixture(family, dest):
    os.makedirs(dest)
    for f in MODEL_FILES(fixture(family)):
        shutil.copy(os.path.join(fixture(family), f), dest)
    return str(dest)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {prefix + k: v})
    return out


def one_line(fn, match, kind=AiosError):
    with pytest.raises(kind, match=match) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


def nothing_written(home):
    assert catalog().query("SELECT * FROM models") == []
    assert not (home / "models").exists() or not any((home / "models").rglob("*.safetensors"))
    assert not (home / "tmp").exists() or not any((home / "tmp").iterdir())


def hf_cache(root, repo, family, commit=COMMIT):
    """A real huggingface_hub cache layout: blobs by sha256, a snapshot of symlinks, refs/main."""
    org, name = repo.split("/")
    base = root / "hub" / f"models--{org}--{name}"
    (base / "blobs").mkdir(parents=True)
    (base / "snapshots" / commit).mkdir(parents=True)
    (base / "refs").mkdir()
    for f in MODEL_FILES(fixture(family)):
        digest = sha256(os.path.join(fixture(family), f))
        shutil.copy(os.path.join(fixture(family), f), base / "blobs" / digest)
        os.symlink(os.path.join("..", "..", "blobs", digest), base / "snapshots" / commit / f)
    (base / "refs" / "main").write_text(commit)
    return root


# -- import, every family --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_imports_as_a_verified_registry_version(family, aios_home):
    path = fixture(family)
    mv = aios.import_model(family, path)
    assert (mv.name, mv.version) == (family, 1)
    cfg = lm.read_config(path)
    files = set(os.listdir(mv.path))
    assert {
        "model.json",
        "params.safetensors",
        "signature.json",
        "metrics.json",
        "lineage.json",
        "manifest.json",
    } <= files
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= files
    assert ("chat_template.jinja" in files) == (lm.find_template(path) is not None)
    definition = json.loads(open(os.path.join(mv.path, "model.json")).read())
    stored = "float32" if family == "gpt2" else "bfloat16"
    assert definition["task"] == "lm" and definition["dtype"] == stored and definition["layout"] == "stacked"
    assert lm.from_dict(definition["spec"]["config"]) == cfg.replace(dtype=stored)
    assert definition["spec"]["kind"] == "lm" and definition["spec"]["family"] == cfg.family
    assert definition["card"]["parameters"] == lm.count_params(cfg)
    # the params file is compress.params_file's format and holds the checkpoint's tensors bit for bit
    tree = params_file.load_tree(os.path.join(mv.path, "params.safetensors"))
    want = lm.load_params(path, cfg, dtype=None)
    got, expect = flat(tree), flat(want)
    assert got.keys() == expect.keys()
    for k in expect:
        bits = np.ascontiguousarray(expect[k]).view(np.uint8)
        assert got[k].dtype == expect[k].dtype and np.array_equal(got[k].view(np.uint8), bits), k
    # lineage: where it came from, the sha256 of every source file read
    lineage = mv.lineage
    assert lineage["source"] == os.path.abspath(path) and lineage["imported"] and lineage["architecture"]
    shards = [f for f in os.listdir(path) if f.endswith(".safetensors") or f.endswith(".index.json")]
    assert set(shards) <= set(lineage["files"])
    for f, digest in lineage["files"].items():
        assert digest == sha256(os.path.join(path, f))
    assert mv.signature["inputs"][0]["name"] == "input_ids" and mv.signature["outputs"][0]["shape"] == [
        -1,
        -1,
        cfg.vocab_size,
    ]
    # listed under %aios models, with where it came from
    table = str(registry.models_table())
    assert family in table and os.path.abspath(path) in table
    assert registry.tokenizer_sha(family) == sha256(os.path.join(path, "tokenizer.json"))
    assert [a for a, o in catalog().query("SELECT action, object FROM audit")] == ["import"]


def test_the_params_writer_streams_the_params_file_format_and_checks_its_plan(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.int8)
    plan = [("w/kernel", (2, 3), np.float32), ("b", (4,), np.int8)]
    path = tmp_path / "p.safetensors"
    with open(path, "wb") as f:
        w = ParamsWriter(f, plan, {"w": {"kernel": "w/kernel"}, "b": "b"})
        w.add("w/kernel", a)
        w.add("b", b)
        digest, size = w.close()
    raw = path.read_bytes()
    assert (digest, size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    tree = params_file.load_tree(path)
    assert np.array_equal(tree["w"]["kernel"], a) and np.array_equal(tree["b"], b)
    seen = []
    back = read_params(str(path), digest, size, lambda n, x: seen.append(n) or x * 2)
    assert seen == ["w/kernel", "b"] and np.array_equal(back["w"]["kernel"], a * 2)
    one_line(lambda: read_params(str(path), "0" * 64, size), "sha256 mismatch")
    one_line(lambda: read_params(str(path), digest, size + 1), "the manifest says")
    with open(tmp_path / "q", "wb") as f:
        w = ParamsWriter(f, plan, {"w": {"kernel": "w/kernel"}, "b": "b"})
        one_line(lambda: w.add("b", b), "arrived where 'w/kernel'")
        w.add("w/kernel", a)
        one_line(w.close, "never written")


# -- hf: through the Hugging Face cache, offline ------------------------------------------------------


def test_hf_import_reads_the_hugging_face_cache_offline(tmp_path, monkeypatch, aios_home):
    hf_cache(tmp_path / "hf", "tiny-org/tiny-qwen3", "qwen3")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    mv = registry.import_model("qwen", "hf:tiny-org/tiny-qwen3", alias="production")
    lin = mv.lineage
    assert (lin["source"], lin["repo"], lin["revision"], lin["commit"]) == (
        "hf:tiny-org/tiny-qwen3",
        "tiny-org/tiny-qwen3",
        "main",
        COMMIT,
    )
    assert lin["files"]["model-00002-of-00002.safetensors"] == sha256(
        os.path.join(fixture("qwen3"), "model-00002-of-00002.safetensors")
    )
    assert mv.aliases == ["production"] and "hf:tiny-org/tiny-qwen3@main" in str(registry.models_table())
    pinned = registry.import_model("qwen", f"hf:tiny-org/tiny-qwen3@{COMMIT}")
    assert pinned.version == 2 and pinned.lineage["revision"] == COMMIT
    m = registry.load("qwen", "production")
    direct = lm.load_pretrained(fixture("qwen3"))
    assert m.generate("Hello there", max_tokens=6).tokens == direct.generate("Hello there", max_tokens=6).tokens
    before = catalog().query("SELECT name, version FROM models")
    one_line(lambda: registry.import_model("x", "hf:tiny-org/absent"), "not in the Hugging Face cache", NotFound)
    one_line(lambda: registry.import_model("x", "hf:tiny-org/tiny-qwen3@v9"), "HF_HUB_OFFLINE", NotFound)
    one_line(lambda: registry.import_model("x", "hf:no-slash"), "hf:ORG/REPO", InvalidInput)
    assert catalog().query("SELECT name, version FROM models") == before


# -- bad input: one line, nothing written ----------------------------------------------------------------


def test_bad_checkpoints_are_one_line_errors_that_write_nothing(tmp_path, aios_home):
    imp = lambda path: lambda: registry.import_model("bad", str(path))
    (tmp_path / "empty").mkdir()
    one_line(imp(tmp_path / "empty"), "has no config.json")
    one_line(imp(tmp_path / "nowhere"), "is not a directory", NotFound)

    path = copy_fixture("llama", tmp_path / "bert")
    cfg = json.load(open(os.path.join(path, "config.json")))
    json.dump({**cfg, "architectures": ["BertForMaskedLM"]}, open(os.path.join(path, "config.json"), "w"))
    msg = one_line(imp(path), "unsupported architecture BertForMaskedLM")
    assert all(arch in msg for arch in lm.ARCHITECTURES)

    path = copy_fixture("qwen3", tmp_path / "missing")
    os.remove(os.path.join(path, "model-00002-of-00002.safetensors"))
    one_line(imp(path), "model-00002-of-00002.safetensors .* is missing")

    path = copy_fixture("qwen3", tmp_path / "truncated")
    shard = os.path.join(path, "model-00001-of-00002.safetensors")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 64)
    one_line(imp(path), "truncated")

    path = copy_fixture("llama", tmp_path / "vocab")  # a tokenizer with more tokens than the embedding has rows
    cfg = json.load(open(os.path.join(path, "config.json")))
    json.dump({**cfg, "vocab_size": 256}, open(os.path.join(path, "config.json"), "w"))
    one_line(imp(path), r"tokenizer has \d+ tokens but the model's embedding has 256 rows")

    path = copy_fixture("gemma3", tmp_path / "shapes")  # config from another model: found mid-stream
    cfg = json.load(open(os.path.join(path, "config.json")))
    json.dump({**cfg, "intermediate_size": 96}, open(os.path.join(path, "config.json"), "w"))
    one_line(imp(path), "config.json implies")

    one_line(lambda: registry.import_model("Bad Name", fixture("llama")), "invalid model name")
    one_line(lambda: registry.import_model("ok", fixture("llama"), dtype="int8"), "store as one of", InvalidInput)
    nothing_written(aios_home)


def test_a_tampered_language_model_is_refused_before_use(aios_home):
    mv = registry.import_model("tiny", fixture("llama"))
    params = os.path.join(mv.path, "params.safetensors")
    os.chmod(params, stat.S_IRUSR | stat.S_IWUSR)
    with open(params, "r+b") as f:
        f.seek(os.path.getsize(params) - 3)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    one_line(lambda: registry.load("tiny"), "params.safetensors has been modified")
    one_line(lambda: registry.load_lm("tiny", device="host"), "params.safetensors has been modified")
    with open(params, "r+b") as f:
        f.seek(os.path.getsize(params) - 3)
        f.write(byte)
    assert registry.load("tiny").version == 1  # restored: loads again
    tok = os.path.join(mv.path, "tokenizer.json")
    os.chmod(tok, stat.S_IRUSR | stat.S_IWUSR)
    with open(tok, "a") as f:
        f.write(" ")
    one_line(lambda: registry.load("tiny"), "tokenizer.json is longer than published")
    one_line(lambda: registry.load_tokenizer("tiny"), "tokenizer.json is longer than published")


# -- loading and generating --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_generate_from_the_registry_equals_generate_on_the_checkpoint(family, aios_home):
    registry.import_model(family, fixture(family), alias="production")
    m = registry.load(family, "production")
    direct = lm.load_pretrained(fixture(family))
    assert isinstance(m, registry.LoadedLM) and m.version == 1 and m.config == direct.cfg.replace(dtype=m.config.dtype)
    chat = [{"role": "user", "content": "Copy the notice."}]
    prompts = ["The licensee may copy", "Hi", chat] if direct.tokenizer.template is not None else ["The licensee", "Hi"]
    settings = dict(max_tokens=8, temperature=0.9, top_k=20, seed=[1, 2, 3][: len(prompts)])
    deltas = []
    got = m.generate(prompts, on_token=deltas.append, **settings)
    want = direct.generate(prompts, **settings)
    assert [c.tokens for c in got] == [c.tokens for c in want] and [c.text for c in got] == [c.text for c in want]
    for i, c in enumerate(got):  # the callback saw every token and all the text, as it was made
        assert "".join(d.text for d in deltas if d.index == i) == c.text
    streamed = list(m.generate(prompts, stream=True, **settings))
    for i, c in enumerate(got):
        assert [d.token for d in streamed if d.index == i][: len(c.tokens)] == c.tokens
    # the pieces a serving engine takes, and what the handle says about itself
    cfg, params, tok, template, eos = m.parts()
    assert cfg is m.config and tok is m.tokenizer and template is m.chat_template and eos == m.eos_ids
    assert isinstance(params["layers"], tuple) and len(params["layers"]) == cfg.num_layers
    assert str(m.path).endswith(f"{family}/v1") and m.signature["outputs"][0]["name"] == "logits"
    meta = m.metadata
    assert meta["card"]["family"] == cfg.family and meta["tokenizer_sha256"] == m.tokenizer_sha
    assert meta["aliases"] == ["production"] and meta["lineage"]["imported"]
    host = registry.load_lm(family, 1, dtype=None, stacked=True, device="host")
    assert isinstance(host.params["layers"]["q"]["kernel"], np.ndarray)
    assert host.params["layers"]["q"]["kernel"].shape[0] == cfg.num_layers and host.dtype == m.definition["dtype"]


def test_a_derived_language_model_keeps_its_base_tokenizer_and_can_be_compressed(aios_home):
    from aios_lab.compress.quant import compress_params

    base = registry.import_model("base", fixture("qwen3"))
    host = registry.load_lm("base", device="host", stacked=True)
    cfg = host.config
    tuned = {**host.params, "final_norm": {"scale": host.params["final_norm"]["scale"] * 1.5}}
    spec = lm_artifact.spec_for(cfg, base={"model": "base", "version": base.version})
    lineage = {"base_model": "base", "base_version": base.version, "job": "tune", "checkpoint_step": 10}
    mv = registry.publish_params(
        "tuned", spec, tuned, task="lm", input_shape=(64,), n_outputs=cfg.vocab_size, lineage=lineage
    )
    m = registry.load("tuned")
    assert m.tokenizer_sha == host.tokenizer_sha and m.lineage["base_model"] == "base"
    assert m.generate("Hello", max_tokens=4).completion_tokens == 4
    assert "tune@10" in str(registry.models_table("tuned"))
    q, _ = compress_params(tuned, "int8")
    small = registry.publish_params(
        "tuned", spec, q, task="lm", input_shape=(64,), n_outputs=cfg.vocab_size, method="int8"
    )
    assert small.nbytes < mv.nbytes
    assert registry.load("tuned", 2).generate("Hello", max_tokens=4).completion_tokens == 4
    no_tok = {**spec}
    no_tok.pop("base")
    one_line(
        lambda: registry.publish_params("t2", no_tok, tuned, task="lm", input_shape=(64,), n_outputs=512),
        "needs its tokenizer",
        InvalidInput,
    )
    bad = {**tuned, "embed": tuned["embed"][:, :32]}
    one_line(
        lambda: registry.publish_params("t2", spec, bad, task="lm", input_shape=(64,), n_outputs=512),
        "has embed shaped",
        InvalidInput,
    )


# -- verbs and the chat box -------------------------------------------------------------------------------


def test_conversation_keeps_turns_streams_replies_and_recovers_from_errors(aios_home):
    from aios_lab.chat_widget import ChatBox, Conversation, render

    registry.import_model("chatty", fixture("qwen3"))
    m = registry.load("chatty")
    conv = Conversation(m, system="Be brief.", max_tokens=6)
    seen = []
    reply = conv.send("Hello", on_text=seen.append)
    assert seen and seen[-1] == reply and all(reply.startswith(s) for s in seen)
    assert [r for r, _ in conv.transcript()] == ["system", "user", "assistant"] and not conv.busy
    want = m.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}], max_tokens=6)
    assert reply == want.text
    with pytest.raises(AiosError, match="context"):
        conv.send("x " * 200)  # longer than the context: the turn never happened
    assert len(conv.messages) == 3 and not conv.busy

    def nested(_):
        with pytest.raises(Busy):
            conv.send("interrupt")

    conv.send("Again", on_text=nested)
    assert [r for r, _ in conv.transcript()] == ["system", "user", "assistant", "user", "assistant"]
    conv.reset()
    assert conv.messages == [{"role": "system", "content": "Be brief."}]
    assert "<b>user</b>: a&lt;b" in render([("user", "a<b")])

    box = ChatBox(m, system="Be brief.", max_tokens=6, background=False)
    box.submit("Hello")
    assert box.conversation.transcript()[1:] == [("user", "Hello"), ("assistant", reply)]
    assert "Hello" in box.log.value
    assert not box.entry.disabled
    box.entry.value = "x " * 200
    assert "context" in box.log.value and len(box.conversation.messages) == 3  # the error is shown, not raised
    box.clear()
    assert box.conversation.messages == [{"role": "system", "content": "Be brief."}] and "Hello" not in box.log.value


def test_model_import_generate_and_chat_verbs_in_a_real_shell(ip, capsys, aios_home):
    shown = ip.run_line_magic("aios", f"model import tiny --from {fixture('llama')} --alias production")
    text = str(shown)
    assert "imported tiny:v1: llama" in text and "2 layers" in text and "context 128" in text and "vocab 512" in text
    assert "parameters" in text and "kB (bfloat16)" in text
    assert "tiny" in str(ip.run_line_magic("aios", "models"))
    capsys.readouterr()
    out = ip.run_line_magic("aios", 'generate tiny:production "The licensee may" --max-tokens 6')
    printed = capsys.readouterr().out
    direct = lm.load_pretrained(fixture("llama")).generate("The licensee may", max_tokens=6)
    assert out.completion.tokens == direct.tokens and printed == direct.text + "\n"
    assert "6 generated tokens" in out.summary()
    chat = ip.run_line_magic("aios", 'generate tiny "Hi" --chat --max-tokens 4 --top-k 5 --seed 1')
    assert chat.completion.prompt_tokens > 2
    box = ip.run_line_magic("aios", "chat tiny:1 --max-tokens 4 --top-k 5")
    box.submit("Hi")
    box.wait(120)
    assert box.conversation.transcript() == [("user", "Hi"), ("assistant", chat.text)]
    with pytest.raises(UsageError, match="notebook widget"):
        run("chat tiny", Context(interactive=False))
    with pytest.raises(UsageError, match="not in the Hugging Face cache|is not a directory"):
        ip.run_line_magic("aios", "model import x --from /nonexistent/dir")
    with pytest.raises(UsageError, match="no model named 'nope'"):
        ip.run_line_magic("aios", 'generate nope "hi"')
