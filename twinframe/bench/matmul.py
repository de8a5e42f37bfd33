"""The matmul rate the step is measured against, in the same rounds as the steps: f32 4096^3
on CPU; bf16 4096^3 and 8192^3 on a GPU. One variant per framework and size."""

from __future__ import annotations

from twinframe.bench import env
from twinframe.bench.timing import Variant


def sizes(on_gpu: bool, n: int | None = None) -> list[tuple[int, str]]:
    if n is not None:  # one size (tests)
        return [(n, "bfloat16" if on_gpu else "float32")]
    return [(4096, "bfloat16"), (8192, "bfloat16")] if on_gpu else [(4096, "float32")]


def variants(on_gpu: bool, calls: int | None = None, size: int | None = None) -> list[Variant]:
    """torch and JAX n^3 matmuls (random operands made once, on the device)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    out = []
    dev = env.torch_device()
    for n, dtype in sizes(on_gpu, size):
        rng = np.random.default_rng(n)
        a32 = rng.standard_normal((n, n), np.float32)
        b32 = rng.standard_normal((n, n), np.float32)
        ta = torch.from_numpy(a32).to(dev, getattr(torch, dtype))
        tb = torch.from_numpy(b32).to(dev, getattr(torch, dtype))
        ja = jnp.asarray(a32, getattr(jnp, dtype))
        jb = jnp.asarray(b32, getattr(jnp, dtype))
        mm = jax.jit(jnp.matmul)
        reps = calls or (20 if on_gpu else 1)
        flops = 2.0 * n**3
        tag = f"matmul {dtype} {n}^3"
        out.append(Variant(tag, "torch", "matmul", lambda ta=ta, tb=tb: ta @ tb,
                           env.torch_sync, flops=flops, steps=reps))
        out.append(Variant(tag, "jax", "matmul", lambda ja=ja, jb=jb, mm=mm: mm(ja, jb),
                           env.jax_sync, flops=flops, steps=reps))
    return out
