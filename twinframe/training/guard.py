"""Guards at the model boundary, shared by every model's engines.

- Input validation (`check_ints`, `check_floats`, `check_bools`): host arrays are checked on the
  host before either framework sees them; a bad one is a one-line `BadInput` naming the array,
  the problem and the first offending index. (JAX clamps an out-of-range gather index silently
  and torch fails deep inside a kernel: neither may see such an array.)
- Non-finite steps: an engine whose loss or gradient norm is NaN/Inf leaves its parameters,
  optimizer state and carry as they were before the step and reports the first non-finite tensor
  (`first_nonfinite`: parameters, then carry, then loss terms, then gradients, each in layout
  order) under the record key `nonfinite`; the training loop stops there (`NonFiniteError`)
  or, with `--on-nonfinite skip`, goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from twinframe.errors import TwinframeError

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec

Arrays = Mapping[str, Any] | Callable[[], Mapping[str, Any]]

NONFINITE_KEY = "nonfinite"


class BadInput(TwinframeError, ValueError):
    """A host array at the model boundary has the wrong shape, dtype or values."""


class NonFiniteError(TwinframeError):
    """A training step produced a NaN or Inf loss or gradient."""


# -- input validation ---------------------------------------------------------------------------


def _index(x: np.ndarray, bad: np.ndarray) -> str:
    i = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.ndim else ()
    return f"[{', '.join(str(int(k)) for k in i)}]"


def _shape(name: str, x: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape,
                                                                           strict=True)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + \
            ("," if len(shape) == 1 else "") + ")"
        raise BadInput(f"{name}: shape {tuple(x.shape)}, expected {want}")
    return x


def check_ints(name: str, x: Any, shape: tuple[int | None, ...], low: int, high: int
               ) -> np.ndarray:
    """x: an integer array of `shape` (None = any size) with values in [low, high)."""
    x = _shape(name, x, shape)
    if not np.issubdtype(x.dtype, np.integer):
        raise BadInput(f"{name}: dtype {x.dtype.name}, expected an integer type")
    if x.size:
        bad = (x < low) | (x >= high)
        if bad.any():
            raise BadInput(f"{name}: value {int(x[bad][0])} at {_index(x, bad)} outside "
                           f"[{low}, {high})")
    return x


def check_floats(name: str, x: Any, shape: tuple[int | None, ...], low: float = -np.inf,
                 high: float = np.inf) -> np.ndarray:
    """x: a floating array of `shape`, finite (no NaN/Inf), with values in [low, high]."""
    x = _shape(name, x, shape)
    if not np.issubdtype(x.dtype, np.floating):
        raise BadInput(f"{name}: dtype {x.dtype.name}, expected a floating type")
    if x.size:
        bad = ~np.isfinite(x)
        if bad.any():
            raise BadInput(f"{name}: {x[bad][0]} at {_index(x, bad)} (inputs must be finite)")
        bad = (x < low) | (x > high)
        if bad.any():
            raise BadInput(f"{name}: value {x[bad][0]} at {_index(x, bad)} outside "
                           f"[{low}, {high}]")
    return x


def check_bools(name: str, x: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    x = _shape(name, x, shape)
    if x.dtype != np.bool_:
        raise BadInput(f"{name}: dtype {x.dtype.name}, expected bool")
    return x


# -- non-finite steps ---------------------------------------------------------------------------


def describe(x: Any) -> str | None:
    """None when every element of x is finite, else '(n NaN, m Inf of size)'."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating) and a.dtype.name != "bfloat16":
        return None
    a = a.astype(np.float32)
    n_nan = int(np.isnan(a).sum())
    n_inf = int(np.isinf(a).sum())
    if not n_nan and not n_inf:
        return None
    return f"({n_nan} NaN, {n_inf} Inf of {a.size})"


def first_nonfinite(groups: Iterable[tuple[str, Arrays]]) -> str | None:
    """'<kind> '<name>' (n NaN, m Inf of size)' for the first non-finite array of the first
    group that has one (groups and their arrays in the order given; a callable group is only
    evaluated when the groups before it are finite), else None."""
    for kind, arrays in groups:
        for name, x in (arrays() if callable(arrays) else arrays).items():
            what = describe(x)
            if what is not None:
                return f"{kind} '{name}' {what}"
    return None


def nonfinite_report(groups: Iterable[tuple[str, Arrays]], norm: float) -> str:
    """The `nonfinite` record entry of a failed step: the first non-finite tensor, or (all
    tensors finite) the gradient norm that overflowed."""
    found = first_nonfinite(groups)
    return found if found is not None else (
        f"gradient global norm {norm} (all gradients finite: the norm overflowed)")


def finite_scalars(*xs: float) -> bool:
    return all(np.isfinite(x) for x in xs)


@functools.lru_cache(maxsize=8)
def identity_step(spec: ModelSpec, cfg: Any) -> Callable[..., Any]:
    """`spec.make_train_step(cfg, optax.identity())`: the model's own train step with the raw
    gradients as updates, so its new params are params + grads. With finite params a leaf of
    them is non-finite exactly where the gradient is: how a JAX engine finds the first
    non-finite gradient after a failed step (compiled only then; donated arguments: pass
    copies)."""
    import optax

    return spec.make_train_step(cfg, optax.identity())


def jax_copy(tree: Any) -> Any:
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(jnp.copy, tree)
