"""A jitted forward pass over compressed parameters: weights stay int8/int4/bf16 on the device and are
dequantised inside the compiled function, never expanded back to float32 at load time.

>>> fwd = QForward(model.apply, qparams)      # qparams from compress_params, or plain float params
>>> logits = fwd(x)                           # numpy in, numpy out, any batch size
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .quant import dequantize_params, is_q


def dequantizing(apply: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``apply`` wrapped with a parameter transform that expands compressed tensors (inside the trace)."""

    def forward(params: Any, x: Any) -> Any:
        return apply(dequantize_params(params, jnp), x)

    return forward


def device_bytes(params: Any) -> int:
    """Bytes the parameters occupy as held (compressed tensors count their int8/uint8/bf16 parts)."""
    return int(sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params)))


def _bucket(n: int) -> int:
    """Batch sizes are padded up to a power of two so a server compiles a handful of shapes, not one per size."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


class QForward:
    """``apply`` over (possibly compressed) ``params`` put once on ``device``, jitted, numpy in and out."""

    def __init__(self, apply: Callable[[Any, Any], Any], params: Any, device: Any = None, bucket: bool = True):
        self.params = jax.device_put(params, device) if device is not None else jax.device_put(params)
        self.jitted = jax.jit(dequantizing(apply))
        self.bucket = bucket
        self.compressed = any(is_q(v) for v in jax.tree_util.tree_leaves(params, is_leaf=is_q))

    @property
    def nbytes(self) -> int:
        return device_bytes(self.params)

    def device(self, x: Any) -> jax.Array:
        """The jitted forward on a device batch (no padding, no host copy): for timing and chaining."""
        return self.jitted(self.params, x)

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        n = x.shape[0]
        if n == 0:
            out = jax.eval_shape(self.jitted, self.params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
            return np.zeros((0, *out.shape[1:]), out.dtype)
        if self.bucket and _bucket(n) != n:
            pad = np.zeros((_bucket(n) - n, *x.shape[1:]), x.dtype)
            return np.asarray(self.jitted(self.params, np.concatenate([x, pad])))[:n]
        return np.asarray(self.jitted(self.params, x))


__all__ = ["QForward", "dequantizing", "device_bytes"]
