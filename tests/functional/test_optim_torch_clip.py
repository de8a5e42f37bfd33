"""`optim.clip_by_global_norm_torch` against torch's own `clip_grad_norm_` (altlas.md §4.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from twinframe.functional.optim import clip_by_global_norm_torch, torch_global_norm

SHAPES = {"emb": (63, 16), "w": (16, 128), "b": (128,), "fc": (32, 63)}
ORDER = ("w", "emb", "fc", "b")  # the reference's order, not the tree's sorted key order


def _grads(scale: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}


def _in_order(tree: dict) -> list:
    return [tree[k] for k in ORDER]


def _torch_clip(grads: dict[str, np.ndarray], max_norm: float) -> tuple[dict, float]:
    """torch.nn.utils.clip_grad_norm_ on parameters listed in ORDER."""
    params = []
    for k in ORDER:
        p = torch.nn.Parameter(torch.zeros(SHAPES[k]))
        p.grad = torch.from_numpy(grads[k].copy())
        params.append(p)
    n = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return {k: p.grad.numpy() for k, p in zip(ORDER, params, strict=True)}, float(n)


@pytest.mark.parametrize(("scale", "max_norm"), [(1.0, 1.0), (1e-3, 1.0), (1.0, 1e3)])
def test_matches_torch_clip_grad_norm(scale: float, max_norm: float) -> None:
    """Bit for bit, including the factor c/(n + 1e-6) applied when it is below 1 only by eps."""
    grads = _grads(scale)
    want, n_t = _torch_clip(grads, max_norm)
    tx = clip_by_global_norm_torch(max_norm, _in_order)
    g = jax.tree_util.tree_map(jnp.asarray, grads)
    got, state = jax.jit(tx.update)(g, tx.init(g))
    assert isinstance(state, optax.EmptyState)
    assert float(torch_global_norm(_in_order(g))) == pytest.approx(n_t, rel=1e-6)
    for k in ORDER:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)


def test_non_positive_max_norm_is_identity() -> None:
    g = jax.tree_util.tree_map(jnp.asarray, _grads(10.0))
    for c in (0.0, -1.0):
        tx = clip_by_global_norm_torch(c, _in_order)
        out, _ = tx.update(g, tx.init(g))
        assert all(out[k] is g[k] for k in ORDER)


def test_global_norm_is_norm_of_norms() -> None:
    leaves = [jnp.full((2, 2), 3.0), jnp.full((4,), 4.0)]  # per-tensor norms 6 and 8
    assert float(torch_global_norm(leaves)) == 10.0
