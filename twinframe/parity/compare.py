"""Compare candidate (JAX) against reference (torch) tensors and trees, leaf by leaf."""

from __future__ import annotations

import dataclasses

import numpy as np

from twinframe.models.layout import flatten_tree, path_str
from twinframe.parity import tolerances


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One tensor of one parity level: reference (torch) vs candidate (JAX) and the tolerance."""

    level: str
    name: str
    reference: np.ndarray
    candidate: np.ndarray
    tol_key: str
    dtype: str = "float32"
    note: str = ""
    scale: float | None = None  # overrides max|reference| for "scaled" tolerances


@dataclasses.dataclass(frozen=True)
class Record:
    """A scored comparison (what the CLI prints and the report renders)."""

    model: str
    level: str
    name: str
    max_abs: float
    max_rel: float
    tolerance: str
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def score(model: str, c: Comparison) -> Record:
    tol = tolerances.get(c.tol_key, c.dtype)
    max_abs, max_rel, ok = tol.evaluate(c.candidate, c.reference, c.scale)
    return Record(model, c.level, c.name, max_abs, max_rel, tol.describe(), ok, c.note)


def compare_trees(
    level: str, prefix: str, reference: dict, candidate: dict, tol_key: str, dtype: str = "float32"
) -> list[Comparison]:
    """One Comparison per leaf of two trees with identical structure (keyed by path)."""
    ref, cand = flatten_tree(reference), flatten_tree(candidate)
    out = []
    for path in sorted(set(ref) | set(cand), key=path_str):
        name = f"{prefix}{path_str(path)}"
        if path not in ref or path not in cand:
            empty = np.full((1,), np.nan)
            out.append(Comparison(level, name, empty, np.zeros(0), tol_key, dtype, "missing leaf"))
            continue
        out.append(Comparison(level, name, np.asarray(ref[path]), np.asarray(cand[path]),
                              tol_key, dtype))
    return out
