"""Benchmark of generation and fine-tuning of a Llama-shaped model with random weights (hidden 512, 8 layers,
vocab 32000), every number measured side by side in one run.

    python bench/generate.py [--rounds 3] [--tokens 64] [--prompt 16] [--train-steps 6]

Decode tokens/s at batch 1 and batch 8, greedy, ``--tokens`` new tokens after a ``--prompt``-token prompt
(prefill included), for:

  (a) ours    ``aios.registry.load(MODEL).generate(...)``, as users run it (the checkpoint is imported
              into a scratch registry first)
  (b) bare    a jitted greedy loop written here: one prefill that fills a preallocated KV cache, then a
              ``fori_loop`` of decode steps, layers unrolled, no host work between tokens
  (c) torch   transformers' ``generate`` on the same checkpoint, when torch is installed (else it says so)

in interleaved rounds (a, b, c, a, b, c, ...), then the medians and (a)/(b) (target >= 0.9 at both batch
sizes). Then fine-tuning on a tokenized dataset, full and LoRA, through the trainer: steps/s (median step
time after the first, compiled, step) and the bytes each device holds for training: params + optimizer
state, plus the frozen base for LoRA (target: LoRA <= 25% of full).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _aios_path

_aios_path.setup()

from serve_lm import VOCAB, build_checkpoint  # noqa: E402  the same Llama-shaped checkpoint as the serving bench

MODEL = "bench-llama"


# -- (b) the bare loop -------------------------------------------------------------------------------------
def bare_generate(cfg, n_new: int):
    """A jitted ``(layers, embed, final_norm, lm_head, prompt [B, P]) -> tokens [B, n_new]``: greedy decoding
    over a KV cache ``[B, KV, P + n_new, head_dim]`` per layer, written with nothing but ``lm.layers``."""
    import jax
    import jax.numpy as jnp

    from aios_lab.lm import layers, rope

    H, KV, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def block(lp, x, pos, cache_k, cache_v, mask):
        b, t, _ = x.shape
        h = layers.norm(cfg, lp["attn_norm"], x)
        q = layers.dense(lp["q"], h).reshape(b, t, H, hd)
        k = layers.dense(lp["k"], h).reshape(b, t, KV, hd)
        v = layers.dense(lp["v"], h).reshape(b, t, KV, hd)
        cos, sin = rope.cos_sin(cfg.rope, hd, pos)
        q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
        start = pos[0, 0]
        cache_k = jax.lax.dynamic_update_slice(cache_k, jnp.swapaxes(k, 1, 2), (0, 0, start, 0))
        cache_v = jax.lax.dynamic_update_slice(cache_v, jnp.swapaxes(v, 1, 2), (0, 0, start, 0))
        x = x + layers.dense(lp["o"], layers.attention(cfg, q, cache_k, cache_v, mask, cfg.scale))
        return x + layers.mlp(cfg, lp, layers.norm(cfg, lp["mlp_norm"], x)), cache_k, cache_v

    def logits_of(params, x):
        return layers.dense(params["lm_head"], layers.norm(cfg, params["final_norm"], x[:, -1]))

    @jax.jit
    def run(params, prompt):
        b, p = prompt.shape
        s = p + n_new
        keys = jnp.arange(s)
        caches = [(jnp.zeros((b, KV, s, hd)), jnp.zeros((b, KV, s, hd))) for _ in params["layers"]]
        pos = jnp.broadcast_to(jnp.arange(p), (b, p))
        mask = jnp.broadcast_to(keys[None, :] <= jnp.arange(p)[:, None], (b, p, s))
        x = jnp.take(params["embed"], prompt, axis=0)
        for i, lp in enumerate(params["layers"]):
            x, ck, cv = block(lp, x, pos, *caches[i], mask)
            caches[i] = (ck, cv)
        first = jnp.argmax(logits_of(params, x), -1).astype(jnp.int32)

        def step(t, carry):
            caches, token, out = carry
            out = out.at[:, t].set(token)
            at = p + t
            pos = jnp.full((b, 1), at)
            mask = jnp.broadcast_to(keys <= at, (b, 1, s))
            x = jnp.take(params["embed"], token[:, None], axis=0)
            new = []
            for lp, (ck, cv) in zip(params["layers"], caches):
                x, ck, cv = block(lp, x, pos, ck, cv, mask)
                new.append((ck, cv))
            return new, jnp.argmax(logits_of(params, x), -1).astype(jnp.int32), out

        out = jnp.zeros((b, n_new), jnp.int32)
        _, _, out = jax.lax.fori_loop(0, n_new, step, (caches, first, out))
        return out

    return run


# -- the three generators ----------------------------------------------------------------------------------
class Ours:
    name = "(a) ours: registry handle .generate"

    def __init__(self, n_new: int):
        import aios_lab as aios

        self.model, self.n = aios.registry.load(MODEL), n_new

    def __call__(self, prompts) -> list[list[int]]:
        out = self.model.generate([list(map(int, p)) for p in prompts], max_tokens=self.n, ignore_eos=True)
        return [c.tokens for c in out]


class Bare:
    name = "(b) bare jitted loop with a KV cache"

    def __init__(self, n_new: int, loaded):
        import jax

        self.params = jax.device_put(loaded.params)  # the same weights, generation layout (layers unrolled)
        self.run = bare_generate(loaded.config, n_new)

    def __call__(self, prompts):
        return self.run(self.params, prompts).tolist()


class Torch:
    name = "(c) transformers generate (PyTorch)"

    def __init__(self, n_new: int, path: Path):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch, self.n = torch, n_new
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()

    def __call__(self, prompts):
        with self.torch.inference_mode():
            ids = self.torch.as_tensor(prompts, dtype=self.torch.long)
            out = self.model.generate(
                ids,
                attention_mask=self.torch.ones_like(ids),
                max_new_tokens=self.n,
                min_new_tokens=self.n,
                do_sample=False,
                pad_token_id=0,
            )
        return out[:, ids.shape[1] :].tolist()


def torch_or_reason(n_new: int, path: Path):
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return None, f"(c) transformers generate: skipped, {exc.name} is not installed in this environment"
    return Torch(n_new, path), None


def timed(fn, prompts) -> tuple[float, list]:
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(prompts))
    return time.perf_counter() - t0, out


def decode_bench(args, path: Path) -> None:
    import numpy as np

    import aios_lab as aios

    ours = Ours(args.tokens)
    bare = Bare(args.tokens, aios.registry.load(MODEL))
    torch_gen, why = torch_or_reason(args.tokens, path)
    gens = [g for g in (ours, bare, torch_gen) if g is not None]
    rng = np.random.default_rng(0)
    prompts = {b: rng.integers(3, VOCAB, (b, args.prompt)).astype(np.int32) for b in (1, 8)}
    for b, p in prompts.items():  # warm-up (compiles); greedy outputs must agree
        outs = [timed(g, p)[1] for g in gens]
        same = all(np.array_equal(np.asarray(outs[0]), np.asarray(o)) for o in outs[1:])
        print(f"batch {b}: warmed up; greedy tokens {'identical' if same else 'DIFFER'} across generators")
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for b, p in prompts.items():
            for g in gens:
                seconds, _ = timed(g, p)
                rates.setdefault((g.name, b), []).append(b * args.tokens / seconds)
    print(f"\ndecode, {args.tokens} new tokens after {args.prompt} prompt tokens, median of {args.rounds} rounds")
    print(f"{'':42s} {'batch 1':>12s} {'batch 8':>12s}")
    for g in gens:
        cells = [f"{statistics.median(rates[(g.name, b)]):9.0f} t/s" for b in (1, 8)]
        print(f"{g.name:42s} {cells[0]:>12s} {cells[1]:>12s}")
    if why:
        print(why)
    for b in (1, 8):
        ratio = statistics.median(rates[(ours.name, b)]) / statistics.median(rates[(bare.name, b)])
        print(f"(a)/(b) at batch {b}: {ratio:.2f}  (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
        if torch_gen is not None:
            vs = statistics.median(rates[(ours.name, b)]) / statistics.median(rates[(torch_gen.name, b)])
            print(f"(a)/(c) at batch {b}: {vs:.2f}")


# -- fine-tuning: full vs LoRA -----------------------------------------------------------------------------
def finetune_bench(args, home: Path) -> None:
    import numpy as np

    import aios_lab as aios
    from aios_lab.train import models
    from aios_lab.train.trainer import TrainConfig, train

    rng = np.random.default_rng(2)
    source = home / "text.jsonl"
    with open(source, "w") as f:
        for _ in range(64):
            f.write(json.dumps({"text": " ".join(f"w{int(t)}" for t in rng.integers(3, VOCAB, 200))}) + "\n")
    aios.dataset("bench-text", f"jsonl:{source}", tokenizer=MODEL, format="text", block=args.block, pack=True)
    runs = {
        "full": {},
        "lora r=16 attn, float base": {"lora": "r=16,alpha=32,targets=attn"},
        "lora r=16 attn, int8 base": {"lora": "r=16,alpha=32,targets=attn,base=int8"},
    }
    import jax

    n_dev = len(jax.devices())
    print(
        f"\nfine-tuning: batch {args.batch} x {args.block} tokens, {args.train_steps} steps, "
        f"--shard fsdp --precision bf16 over {n_dev} {jax.devices()[0].platform} device(s)"
    )
    full_bytes = None
    for label, flags in runs.items():
        cfg = TrainConfig.for_job(
            dataset="bench-text",
            model=models.resolve(MODEL),
            task="lm",
            steps=args.train_steps,
            batch=args.batch,
            n_devices=n_dev,
            shard="fsdp",
            precision="bf16",
            log_every=1,
            log_interval_s=0,
            eval_every=10**6,
            checkpoint_every=10**6,
            **flags,
        )
        rows, info = [], {}
        train(cfg, on_metrics=rows.append, checkpoint_dir=home / "ckpt" / label.replace(" ", "_"), on_start=info.update)
        times = [r["step_time"] for r in rows if "split" not in r][1:]  # the first row waited for compiling
        held = info["state_bytes_per_device"] + info.get("frozen_bytes_per_device", 0)
        full_bytes = full_bytes or held
        state, frozen = info["state_bytes_per_device"] / 2**20, info.get("frozen_bytes_per_device", 0) / 2**20
        print(
            f"  {label:28s} {1 / statistics.median(times):6.2f} steps/s   state {state:7.1f} MiB + frozen base "
            f"{frozen:6.1f} MiB = {held / 2**20:7.1f} MiB a device ({100 * held / full_bytes:5.1f}% of full)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aios-bench-generate-"))
    os.environ["AIOS_HOME"] = str(home / "aios")
    import jax

    import aios_lab as aios

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x {len(jax.devices())}, {os.cpu_count()} cpus")
    build_checkpoint(home / "ckpt-hf")
    aios.registry.import_model(MODEL, str(home / "ckpt-hf"))
    decode_bench(args, home / "ckpt-hf")
    if not args.skip_train:
        finetune_bench(args, home)


if __name__ == "__main__":
    main()
