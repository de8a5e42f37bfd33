"""The same weights in both frameworks: a torch module and the JAX trees, built through the
model's layout from one torch-layout state (the canonical NumPy init unless given)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from twinframe.contract import StateDict

if TYPE_CHECKING:
    import torch

    from twinframe.contract import ModelSpec


@dataclasses.dataclass
class Twins:
    """torch module + JAX `params` and `frozen` (every other root of the layout's tree)."""

    spec: ModelSpec
    cfg: Any
    state: StateDict
    torch_model: torch.nn.Module
    params: dict
    frozen: dict

    @classmethod
    def build(cls, spec: ModelSpec, cfg: Any, state: StateDict | None = None, seed: int = 0
              ) -> Twins:
        state = spec.canonical_init(cfg, seed) if state is None else state
        tree = jax.tree_util.tree_map(jnp.asarray, spec.layout(cfg).table.torch_to_tree(state))
        params = tree.pop("params")
        return cls(spec, cfg, state, spec.make_torch(cfg, state), params, tree)

    @property
    def consts(self) -> dict:
        return self.frozen["consts"]

    def torch_state(self) -> StateDict:
        return {k: v.detach().cpu().numpy().copy()
                for k, v in self.torch_model.state_dict().items()}

    def torch_grads(self) -> StateDict:
        """Gradients of the trained parameters that have one, under their torch keys."""
        return {k: p.grad.detach().cpu().numpy().copy()
                for k, p in self.torch_model.named_parameters()
                if p.requires_grad and p.grad is not None}

    def jax_to_torch_layout(self, params: Any) -> StateDict:
        """A params-shaped JAX tree (weights, grads, moments) -> torch keys."""
        return self.spec.layout(self.cfg).params.tree_to_torch(
            jax.tree_util.tree_map(np.asarray, params))
