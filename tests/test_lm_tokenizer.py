"""Tokenizers and chat templates read the way transformers reads them (both template layouts)."""

import json
import os
import shutil

import pytest

from aios_lab import lm
from aios_lab.errors import AiosError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma3", "gpt2"]


def expected(family):
    with open(os.path.join(FIXTURES, family, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


def tokenizer(family):
    path = os.path.join(FIXTURES, family)
    return lm.Tokenizer.from_dir(path, lm.read_config(path))


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_prompts_encode_and_decode_as_transformers(family):
    tok, exp = tokenizer(family), expected(family)
    for p in exp["prompts"]:
        assert tok.encode(p["text"]) == p["ids"]
        assert tok.decode(p["ids"]) == p["decoded"]
    assert [tok.encode(t) for t in exp["batch"]["prompts"]] == exp["batch"]["ids"]
    assert tok.vocab_size == exp["special"]["vocab"]
    assert tok.special["eos_token"] == exp["special"]["eos"] and exp["special"]["eos_id"] in tok.eos_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_templates_render_and_encode_as_transformers(family):
    tok, exp = tokenizer(family), expected(family)
    masks = 0
    for chat in exp["chats"]:
        kw = {"tools": chat["tools"]} if "tools" in chat else {}
        text = tok.render_chat(chat["messages"], add_generation_prompt=chat["add_generation_prompt"], **kw)
        assert text == chat["text"]
        assert (
            tok.encode_chat(chat["messages"], add_generation_prompt=chat["add_generation_prompt"], **kw) == chat["ids"]
        )
        if "assistant_masks" in chat and not chat["add_generation_prompt"]:
            ids, mask = tok.encode_chat_with_mask(chat["messages"])
            assert ids == chat["ids"] and mask == chat["assistant_masks"]
            masks += sum(mask)
    if family in ("qwen2", "qwen3"):  # their template marks assistant turns with {% generation %}
        assert masks > 0


def test_both_template_layouts_are_read():
    def files(family):
        return set(os.listdir(os.path.join(FIXTURES, family)))

    assert "chat_template.jinja" in files("llama")  # transformers 5
    for family in ("llama3", "mistral"):  # older: inside tokenizer_config.json
        assert "chat_template.jinja" not in files(family)
        with open(os.path.join(FIXTURES, family, "tokenizer_config.json"), encoding="utf-8") as f:
            assert json.load(f)["chat_template"]
        assert expected(family)["template_layout"].startswith("old")
    # mistral's is a list of named templates: "default" unless another is named
    path = os.path.join(FIXTURES, "mistral")
    assert "[INST]" in lm.find_template(path)
    assert "unused" in lm.find_template(path, name="tool_use")
    with pytest.raises(AiosError, match="none named 'nope'"):
        lm.find_template(path, name="nope")


def test_template_errors_and_sandbox_are_one_line_errors():
    tok = tokenizer("mistral")
    with pytest.raises(AiosError) as err:
        tok.render_chat([{"role": "assistant", "content": "x"}])
    assert str(err.value) == "chat template: " + expected("mistral")["template_error"]
    evil = lm.ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(AiosError) as err:
        evil.render([{"role": "user", "content": "x"}])
    assert "\n" not in str(err.value)
    with pytest.raises(AiosError, match="does not compile"):
        lm.ChatTemplate("{% for %}")
    tpl = lm.ChatTemplate(
        "{{ strftime_now('%Y') | length }}{{ {'a': 'é<'} | tojson }}{{ bos_token }}", {"bos_token": "<s>"}
    )
    assert tpl.render([{"role": "user", "content": "x"}]) == '4{"a": "é<"}<s>'


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    src = os.path.join(FIXTURES, "llama")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(os.path.join(src, name), tmp_path / name)
    with open(tmp_path / "config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["vocab_size"] = 256
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    os.symlink(os.path.join(src, "model.safetensors"), tmp_path / "model.safetensors")
    for load in (
        lambda: lm.Tokenizer.from_dir(str(tmp_path), lm.read_config(str(tmp_path))),
        lambda: lm.load_pretrained(str(tmp_path)),
    ):
        with pytest.raises(AiosError, match="tokenizer has 500 tokens but the model's embedding has 256") as err:
            load()
        assert "\n" not in str(err.value)
    os.remove(tmp_path / "tokenizer.json")
    with pytest.raises(AiosError, match="no tokenizer.json"):
        lm.Tokenizer.from_dir(str(tmp_path))
