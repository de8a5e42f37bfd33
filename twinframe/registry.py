"""name -> ModelSpec; the only place that knows every model. Adding a model = its own files plus
one factory here (see docs/architecture.md, "Adding a model")."""

from __future__ import annotations

import functools
from collections.abc import Callable

from twinframe.contract import Curve, ModelSpec, Preset, ProgressField, Refusal
from twinframe.errors import TwinframeError


def _hrm() -> ModelSpec:
    from twinframe.functional import hrm as f_hrm
    from twinframe.models import hrm
    from twinframe.parity import hrm as p_hrm
    from twinframe.torch_ref import hrm as t_hrm
    from twinframe.training import hrm as tr_hrm

    return ModelSpec(
        name="hrm", config_cls=hrm.HRMConfig, run_cls=hrm.HRMRun,
        presets={k: Preset(m, r) for k, (m, r) in hrm.PRESETS.items()},
        layout=hrm.layout, canonical_init=hrm.canonical_init, recognise=hrm.recognise,
        check_trainable=hrm.check_trainable, make_torch=t_hrm.HRM,
        torch_optimizer=t_hrm.make_optimizer, jax_optimizer=f_hrm.make_optimizer,
        make_train_step=f_hrm.make_train_step, make_host=tr_hrm.HRMHost,
        engines={"torch": tr_hrm.HRMTorchEngine,
                 "jax": tr_hrm.HRMJaxEngine},
        parity_levels=p_hrm.levels,
        curve=Curve(metrics=("loss", "output_loss", "q_act_loss", "cell_acc_with_givens"),
                    mismatch_label="halted_mask_mismatches", accuracy="cell_acc_with_givens",
                    extra_lrs=(1e-3,)),
        progress=(ProgressField("loss", "loss", ".4f"),
                  ProgressField("cell_acc_with_givens", "acc"),
                  ProgressField("curriculum_stage", "stage", "d"),
                  ProgressField("steps_per_s", "step/s", ".1f")),
        refused=(Refusal(run={"bias_correction": True}), Refusal(run={"noise_source": "native"})),
        infer=tr_hrm.infer, evaluate=tr_hrm.evaluate,
    )


def _altlas() -> ModelSpec:
    from twinframe.functional import altlas as f_alt
    from twinframe.models import altlas
    from twinframe.parity import altlas as p_alt
    from twinframe.torch_ref import altlas as t_alt
    from twinframe.training import altlas as tr_alt

    return ModelSpec(
        name="altlas", config_cls=altlas.AltLASConfig, run_cls=altlas.AltLASRun,
        presets={k: Preset(m, r) for k, (m, r) in altlas.PRESETS.items()},
        layout=altlas.layout, canonical_init=altlas.canonical_init, recognise=altlas.recognise,
        check_trainable=altlas.check_trainable, make_torch=t_alt.AltLAS_RNN,
        torch_optimizer=t_alt.make_optimizer, jax_optimizer=f_alt.make_optimizer,
        make_train_step=f_alt.make_train_step, make_host=tr_alt.AltLASHost,
        engines={"torch": tr_alt.AltLASTorchEngine,
                 "jax": tr_alt.AltLASJaxEngine},
        parity_levels=p_alt.levels,
        curve=Curve(metrics=("loss", "policy_term", "entropy_term", "grad_norm", "mean_logp",
                             "mean_entropy", "mean_length"),
                    mismatch_label="token_mismatch_episodes", accuracy="mean_reward"),
        progress=(ProgressField("loss", "loss", ".4f"),
                  ProgressField("mean_reward", "reward"),
                  ProgressField("success_rate", "success", ".2f"),
                  ProgressField("cumulative_successes", "total", "d"),
                  ProgressField("episodes_per_s", "episodes/s", ".1f")),
        refused=(Refusal(model={"dropout": 0.5}), Refusal(model={"initial_grammar_boost": 2.2})),
        evaluate=tr_alt.evaluate,
    )


_FACTORIES: dict[str, Callable[[], ModelSpec]] = {"hrm": _hrm, "altlas": _altlas}
MODELS = tuple(_FACTORIES)


@functools.cache
def get(name: str) -> ModelSpec:
    """The one ModelSpec of `name` (cached: per-spec compile caches are shared)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise TwinframeError(f"unknown model '{name}' (have {', '.join(MODELS)})") from None
    return factory()
