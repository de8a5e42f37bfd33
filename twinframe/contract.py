"""The model contract: what every model declares so that generic code (convert, check, report,
train, bench, infer) runs it without naming it.

A model fills in one `ModelSpec` (in `registry.py`) from its own files:
- `models/<m>.py`: the model config (architecture: what the layout, the init and the modules
  consume), the run config (optimizer, batch, schedule, runner, task), presets, the layout,
  the canonical NumPy init, `recognise` and `check_trainable`;
- `torch_ref/<m>.py`: the module (`make_torch`) and its torch optimizer;
- `functional/<m>.py`: the pure JAX functions, `make_train_step(cfg, tx)` (jitted, donated);
- `training/<m>.py`: the host (framework-neutral per-step logic) and the two engines;
- `parity/<m>.py`: the parity levels only it has.

Train states (`TrainState`) are plain dicts in one framework's layout:
`{framework, model_name, config, run, host, model, opt, carry}`; `models.layout.
convert_train_state` maps one to the other framework through the declared `Layout`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from twinframe.errors import TwinframeError
from twinframe.models.base import FrozenConfig
from twinframe.models.layout import Layout

if TYPE_CHECKING:
    import optax
    import torch

    from twinframe.parity.compare import Comparison

C = TypeVar("C", bound=FrozenConfig)  # a model's model config (architecture)
R = TypeVar("R", bound=FrozenConfig)  # a model's run config
StateDict = dict[str, np.ndarray]
TrainState = dict[str, Any]
Record = dict[str, Any]
LevelThunks = Mapping[str, Callable[[], "list[Comparison]"]]


class RunConfig(Protocol):
    """What generic code reads of every model's run config."""

    seed: int
    lr: float
    batch_size: int
    checkpoint_every: int

    def to_dict(self) -> dict[str, Any]: ...

    def replace(self, **changes: Any) -> RunConfig: ...


@runtime_checkable
class Engine(Protocol):
    """One framework's side of a run: parameters, optimizer state and carry on its device."""

    framework: str

    def export_state(self) -> TrainState:
        """{'model', 'opt', 'carry'} in this framework's layout, NumPy leaves."""
        ...

    def import_state(self, state: TrainState) -> None: ...

    def params_torch_layout(self) -> StateDict:
        """Trained tensors under their torch keys (what L5 compares)."""
        ...


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One host step over one or more engines: a log record per engine (engines[0] drives the
    host: its outputs decide what the host does next), and how many decisions of the other
    engines differed from engines[0]'s (counted in the model's `Curve.mismatch_label`)."""

    records: list[Record]
    mismatches: int = 0
    note: str = ""


class Host(Protocol):
    """Framework-neutral per-step logic of a run (data, environment, bookkeeping)."""

    t: int

    def step(self, engines: Sequence[Engine]) -> StepResult: ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able host state."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Curve:
    """The L5 lockstep curve of a model: which per-step record fields are compared, what a
    decision mismatch is called, which field plots as accuracy, and the learning rates.
    `judge_params(level, tag, main, None) -> [Comparison]` replaces the default judgement of
    the final parameters (`parity.checks.params_against_floor`, which needs a second run from a
    1-ulp-perturbed start: not made then) where the model's spec prescribes another rule
    (`main`: `parity.checks.LockstepRun`)."""

    metrics: tuple[str, ...]
    mismatch_label: str
    accuracy: str | None = None
    extra_lrs: tuple[float, ...] = ()
    judge_params: Callable[..., list[Comparison]] | None = None
    steps: int | None = None  # the spec's own L5 length (the report's default otherwise: 50)


@dataclasses.dataclass(frozen=True)
class ProgressField:
    """One item of the progress bar: `label` + record[key] formatted with `fmt`."""

    key: str
    label: str
    fmt: str = ".3f"

    def render(self, rec: Record) -> str | None:
        v = rec.get(self.key)
        return None if v is None else f"{self.label} {v:{self.fmt}}"


@dataclasses.dataclass(frozen=True)
class Preset(Generic[C, R]):
    """A named pair of configs."""

    model: C
    run: R


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A config change that training must refuse with a one-line ConfigError (an option no
    engine implements); the contract suite tries each one."""

    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    run: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReferenceForm:
    """How a model's public reference code saves its weights where that differs from the
    torch_ref state_dict (keys torch_ref adds for round trips): `fill(state)` -> the missing
    keys' values, derived from a bare file's keys and shapes (shape-only placeholders work),
    {} unless the file is in the reference form; `saves(key)`: whether the reference code
    saves that torch_ref key (a file written in the reference layout holds only those);
    `ignores(key)`: keys the reference saves for parts the model excludes (dropped on reading,
    with a note; never written back)."""

    fill: Callable[[Mapping[str, np.ndarray]], StateDict]
    saves: Callable[[str], bool]
    ignores: Callable[[str], bool] = lambda key: False


@dataclasses.dataclass(frozen=True, eq=False)
class JaxFace:
    """A model's pure JAX entry points in one calling convention, for adapters that wrap every
    model the same way (`twinframe.flax`). `ModelSpec.jax_face(cfg)` builds it (cache it: the
    functions' identity keys jit caches).

    `params` is the layout tree's `params` root; `frozen` its other roots (`consts`, `state`),
    the roots of `extra` and `carry` ({carry row: array}, batch first) when the face declares
    `init_carry`. `updates` holds new values for any part of `frozen` (`{'carry': ...}`,
    `{'state': ...}`; `{}` when nothing changes). All functions are pure and jittable (they may
    be `jax.jit`-compiled already: a call then runs one compiled function, also eagerly).

      apply(params, frozen, *inputs) -> (outputs, updates)           the main forward
      loss(params, frozen, *batch) -> (loss, (aux, updates))         differentiable in params
      train(step, params, opt_state, frozen, *batch) -> (params, opt_state, loss, updates):
          one call of `step = make_train_step(cfg, tx)` on the same batch; `tx.update` applied
          to `grads`' gradients, then `after_update`, must reproduce it
      example(batch_size, seed) -> (inputs, batch)                    valid arguments
      grads(params, frozen, *batch) -> (loss, grads, (aux, updates)): what the model's optax
          transformation consumes (None: `value_and_grad` of `loss`; a multi-task model: the
          task losses [n] and the task gradients stacked on a leading axis [n, ...])
      after_update(params, frozen, *batch) -> updates                 None: nothing; else what
          the step changes after the optimizer's update, from the new params (an EMA teacher)
      extra: {root: init(params, frozen) -> tree}: state outside the layout table (and not
          optimizer state), built from the weights when a module is made (an EMA teacher)
      init_carry(frozen, batch_size) -> {row: array}                  where the layout's carry
          rows are per-run batch-first tensors (a face without it keeps any carry rows of the
          layout elsewhere: `extra`, the optimizer state)
      methods: further entry points, named, in apply's convention
      method_args(batch_size, seed) -> {method: args}                 valid arguments of methods
      outside: what of the model these functions do not cover (host-side loops), one sentence
      kinds: {leaf name or `extra` root: kind} for leaves of the non-params roots that are not
          plain buffers: 'trace' (plastic state a call rewrites), 'diagnostic' (histories,
          counters), 'ema' (a copy of weights the training step averages); the adapter picks
          the NNX variable type by kind (`twinframe.flax.KINDS`)
    """

    apply: Callable[..., Any]
    loss: Callable[..., Any]
    train: Callable[..., Any]
    example: Callable[[int, int], tuple[tuple[Any, ...], tuple[Any, ...]]]
    init_carry: Callable[[Mapping[str, Any], int], dict[str, Any]] | None = None
    methods: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    outside: str = ""
    method_args: Callable[[int, int], Mapping[str, tuple[Any, ...]]] | None = None
    kinds: Mapping[str, str] = dataclasses.field(default_factory=dict)
    grads: Callable[..., Any] | None = None
    after_update: Callable[..., Any] | None = None
    extra: Mapping[str, Callable[[Any, Mapping[str, Any]], Any]] = dataclasses.field(
        default_factory=dict)

    def value_and_grads(self, params: Any, frozen: Mapping[str, Any], *batch: Any
                        ) -> tuple[Any, Any, tuple[Any, Any]]:
        """(loss, grads, (aux, updates)): `grads`, or `jax.value_and_grad` of `loss`."""
        if self.grads is not None:
            return self.grads(params, frozen, *batch)
        import jax

        (value, (aux, updates)), g = jax.value_and_grad(self.loss, has_aux=True)(
            params, frozen, *batch)
        return value, g, (aux, updates)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec(Generic[C, R]):
    """Everything generic code needs of one model (hashed by identity: `registry.get` returns
    one instance per model, so per-spec caches share compilations).

    Engines are built as `engines[framework](spec, cfg, run, state)`: they take their functions
    from the spec they are given, so a spec with one field replaced (a mutated optimizer, say)
    runs end to end with that replacement."""

    name: str
    config_cls: type[C]
    run_cls: type[R]
    presets: Mapping[str, Preset[C, R]]
    layout: Callable[[C], Layout]
    canonical_init: Callable[[C, int], StateDict]
    recognise: Callable[[Mapping[str, np.ndarray]], C | None]
    check_trainable: Callable[[C, R], None]
    make_torch: Callable[[C, StateDict], torch.nn.Module]
    torch_optimizer: Callable[[torch.nn.Module, R], torch.optim.Optimizer]
    jax_optimizer: Callable[[R], optax.GradientTransformation]
    make_train_step: Callable[[C, optax.GradientTransformation], Callable[..., Any]]
    make_host: Callable[[C, R], Host]
    engines: Mapping[str, Callable[[ModelSpec[C, R], C, R, StateDict | None], Engine]]
    parity_levels: Callable[[C, R], LevelThunks]
    curve: Curve
    progress: tuple[ProgressField, ...]
    refused: tuple[Refusal, ...] = ()
    infer: Callable[[C, R, StateDict, str, int], str] | None = None
    evaluate: Callable[[Engine, C, R, int], dict[str, Any]] | None = None
    # optional: the number of layout table rows a config implies, computed without building
    # the layout; bounds configs read from files before any layout is built (`parity.files`)
    layout_size: Callable[[C], int] | None = None
    jax_face: Callable[[C], JaxFace] | None = None  # optional: NNX modules (`twinframe.flax`)
    reference: ReferenceForm | None = None  # optional: the reference code's own file form
    # the preset the contract suite, `twinframe check` and `twinframe report` use unless told
    # otherwise: the smallest config that keeps every code path (a model whose whole training
    # step compiles slowly names a smaller one than "tiny")
    check_preset: str = "tiny"
    # optional: pictures of what the model does at torch-layout weights, {caption: PNG bytes}
    # (e.g. reconstructions next to the ground truth): `twinframe train` writes them next to its
    # checkpoints, `twinframe report` shows them for the weights each framework reached at the
    # end of the L5 curve
    visualize: Callable[[C, R, StateDict], dict[str, bytes]] | None = None

    def preset(self, name: str) -> Preset[C, R]:
        try:
            return self.presets[name]
        except KeyError:
            raise TwinframeError(
                f"{self.name}: unknown config {name!r} (have {', '.join(self.presets)})"
            ) from None

    def config(self, preset_or_dict: str | dict[str, Any]) -> C:
        """The model config of a preset name, or built from a dict (unknown fields refused)."""
        if isinstance(preset_or_dict, dict):
            return self.config_cls.from_dict(preset_or_dict)
        return self.preset(preset_or_dict).model

    def run_config(self, preset_or_dict: str | dict[str, Any]) -> R:
        if isinstance(preset_or_dict, dict):
            return self.run_cls.from_dict(preset_or_dict)
        return self.preset(preset_or_dict).run
