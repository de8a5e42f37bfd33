"""The engine bases: one framework's parameters, optimizer state and carry, exported and imported
through the model's declared `Layout` (optimizer slots and carry rows), for any optimizer.

A model's engines subclass these and add only their step methods and carry hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from twinframe.contract import StateDict, TrainState
from twinframe.models.layout import normalize_tree_keys
from twinframe.store.io import to_numpy

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec


class TorchEngine:
    """Eager PyTorch: `spec.make_torch` module + `spec.torch_optimizer`, on CUDA when present
    (unless `CPU_ONLY`)."""

    framework = "torch"
    CPU_ONLY = False

    def __init__(self, spec: ModelSpec, cfg: Any, run: Any, state: StateDict | None = None
                 ) -> None:
        import torch

        self.spec, self.cfg, self.run, self.torch = spec, cfg, run, torch
        self.layout = spec.layout(cfg)
        use_cuda = torch.cuda.is_available() and not self.CPU_ONLY
        self.device = torch.device("cuda" if use_cuda else "cpu")
        init = spec.canonical_init(cfg, run.seed) if state is None else state
        self.model = spec.make_torch(cfg, init).to(self.device)
        self.opt = spec.torch_optimizer(self.model, run)
        self.names = self.layout.trainable_keys()

    def dev(self, x: np.ndarray) -> Any:
        """NumPy -> tensor on this engine's device, copied into torch's own (64-byte aligned)
        memory: MKL's small-n SGEMM kernels round differently on operands that are not 16-byte
        aligned, and NumPy's buffers are only guaranteed 16 (see `runtime`)."""
        return self.torch.tensor(np.asarray(x), device=self.device)

    def runtime(self) -> dict[str, Any]:
        """What torch results depend on besides the inputs, recorded in checkpoints: on CPU a
        run is bitwise reproducible only with the same torch/MKL build, the same intra-op
        thread count (reductions and GEMMs split their work per thread) and the same MKL code
        path (CPU instruction set, or MKL_CBWR)."""
        import os

        torch = self.torch
        out: dict[str, Any] = {"torch": torch.__version__, "device": str(self.device)}
        if self.device.type == "cpu":
            out.update(threads=torch.get_num_threads(), mkl_cbwr=os.environ.get("MKL_CBWR"),
                       cpu_capability=torch.backends.cpu.get_cpu_capability())
        return out

    # -- carry hooks (models with a carry override both) ----------------------------------------

    def export_carry(self) -> dict[str, np.ndarray]:
        return {}

    def import_carry(self, carry: dict[str, np.ndarray]) -> None:
        del carry

    # -- train state ---------------------------------------------------------------------------

    def export_state(self) -> TrainState:
        """{'model': state_dict, 'opt': {step, <slot>: {key: moment}}, 'carry'} (NumPy leaves;
        zero moments and step 0 before the first update)."""
        lay = self.layout
        named = dict(self.model.named_parameters())
        steps = lay.step_names("torch")
        opt: dict[str, Any] = {**{k: 0.0 for k in steps.values()},
                               **{s.torch: {} for s in lay.slots}}
        for n in self.names:
            st = self.opt.state.get(named[n], {})
            if st:
                opt[steps[lay.group_of(n)]] = float(st[lay.step.torch])
            for s in lay.slots:
                opt[s.torch][n] = (to_numpy(st[s.torch]) if st else
                                   np.zeros(tuple(named[n].shape), np.float32))
        model = {k: to_numpy(v) for k, v in self.model.state_dict().items()}
        return {"model": model, "opt": opt, "carry": self.export_carry()}

    def import_state(self, state: TrainState) -> None:
        """Load model, optimizer (a fresh one when the step is 0) and carry."""
        from twinframe.torch_ref.layers import load_numpy_state

        lay, torch = self.layout, self.torch
        load_numpy_state(self.model, {k: np.asarray(v) for k, v in state["model"].items()})
        self.opt = self.spec.torch_optimizer(self.model, self.run)
        o = state["opt"]
        steps = {g: float(np.asarray(o[k])) for g, k in lay.step_names("torch").items()}
        named = dict(self.model.named_parameters())
        for n in self.names:
            step = steps[lay.group_of(n)]
            if step > 0:  # torch creates optimizer state lazily: none before the first step
                self.opt.state[named[n]] = {
                    lay.step.torch: torch.tensor(step, dtype=torch.float32),
                    **{s.torch: self.dev(np.asarray(o[s.torch][n], np.float32))
                       for s in lay.slots}}
        self.import_carry(state.get("carry") or {})

    def params_torch_layout(self) -> StateDict:
        sd = self.model.state_dict()
        return {k: sd[k].detach().cpu().numpy().copy() for k in self.names}


class JaxEngine:
    """JAX: `params` (trained) and `frozen` (other roots of the layout's tree) on the device, the
    optax state of `spec.jax_optimizer(run)`; slots found in the optax state by field name."""

    framework = "jax"

    def __init__(self, spec: ModelSpec, cfg: Any, run: Any, state: StateDict | None = None
                 ) -> None:
        import jax
        import jax.numpy as jnp

        self.spec, self.cfg, self.run, self.jax, self.jnp = spec, cfg, run, jax, jnp
        self.layout = spec.layout(cfg)
        init = spec.canonical_init(cfg, run.seed) if state is None else state
        tree = self.layout.table.torch_to_tree(init)
        self.params = self.to_device(tree.pop("params"))
        self.frozen = self.to_device(tree)
        self.tx = spec.jax_optimizer(run)
        self.opt_state = self.tx.init(self.params)
        self.place()

    def to_device(self, tree: Any) -> Any:
        """NumPy tree (digit keys as list indices) -> device arrays (copied, own buffers)."""
        jnp = self.jnp
        return self.jax.tree_util.tree_map(lambda x: jnp.array(np.asarray(x)),
                                           normalize_tree_keys(tree))

    def place(self) -> None:
        """Put state on devices (override for sharding); called after init and import."""

    # -- carry hooks -----------------------------------------------------------------------------

    def export_carry(self) -> dict[str, np.ndarray]:
        return {}

    def import_carry(self, carry: dict[str, np.ndarray]) -> None:
        del carry

    # -- train state ---------------------------------------------------------------------------

    def export_state(self) -> TrainState:
        """{'model': {params, <frozen roots>}, 'opt': {count, <slot>: tree}, 'carry'}."""
        from optax import tree_utils

        get, lay = self.jax.device_get, self.layout
        parts = self._opt_parts()
        opt = {k: np.asarray(get(tree_utils.tree_get(parts[g], lay.step.jax)), np.int32)
               for g, k in lay.step_names("jax").items()}
        for s in lay.slots:
            got = {g: get(tree_utils.tree_get(st, s.jax)) for g, st in parts.items()}
            opt[s.jax] = got[None] if None in got else got
        return {"model": {"params": get(self.params), **get(self.frozen)}, "opt": opt,
                "carry": self.export_carry()}

    def import_state(self, state: TrainState) -> None:
        from optax import tree_utils

        lay, jnp = self.layout, self.jnp
        model = dict(state["model"])
        self.params = self.to_device(model.pop("params"))
        self.frozen = self.to_device(model)
        o = state["opt"]
        slots = {s.jax: self.to_device(o[s.jax]) for s in lay.slots}
        fresh = self.tx.init(self.params)
        new = {}
        for g, k in lay.step_names("jax").items():
            count = jnp.asarray(int(np.asarray(o[k])), jnp.int32)
            part = fresh if g is None else fresh[g]
            new[g] = tree_utils.tree_set(part, **{lay.step.jax: count},
                                         **{n: v if g is None else v[g]
                                            for n, v in slots.items()})
        self.opt_state = new[None] if None in new else new
        self.import_carry(state.get("carry") or {})
        self.place()

    def _opt_parts(self) -> dict[str | None, Any]:
        """{step group: its optax state} ({None: the whole state} when ungrouped)."""
        groups = self.layout.step_groups
        return {g: self.opt_state[g] for g in groups} if groups else {None: self.opt_state}

    def params_torch_layout(self) -> StateDict:
        return self.layout.params.tree_to_torch(self.jax.device_get(self.params))

    def runtime(self) -> dict[str, Any]:
        """What JAX results depend on besides the inputs, recorded in checkpoints."""
        devs = self.jax.devices()
        return {"jax": self.jax.__version__, "backend": devs[0].platform, "devices": len(devs)}


class BenchStep:
    """What an engine's optional `bench_step(host)` returns for `twinframe bench`: `run()` does
    one train step on a batch already on the device (no host data, no metric fetch) and returns
    what to synchronise on; `flops` is the analytic FLOP count of one step (None if unknown);
    `lower()` (JAX) lowers the compiled step for its compile time and XLA cost analysis;
    `lower_for_cost()` (optional) lowers it with its loops unrolled, for the cost analysis."""

    def __init__(self, run: Any, flops: float | None = None, lower: Any = None,
                 lower_for_cost: Any = None) -> None:
        self.run, self.flops, self.lower = run, flops, lower
        self.lower_for_cost = lower_for_cost
