"""Non-finite losses and gradients (issue 10 item 6): the run stops at the step naming the first
non-finite tensor, the same in both frameworks, and keeps the last good checkpoint;
`on_nonfinite="skip"` drops the update and goes on. A non-finite step never changes an engine's
state.

The poison is a spec whose gradient of one tensor gets one NaN each step (a torch grad hook; a
JAX train step built from the model's own loss_and_grads): no module global is patched, so no
compiled function of the real models is affected."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from twinframe import registry
from twinframe.functional import altlas as f_alt
from twinframe.functional import hrm as f_hrm
from twinframe.functional.layers import global_norm
from twinframe.models.layout import flatten_tree
from twinframe.store import checkpoint
from twinframe.training.guard import NonFiniteError
from twinframe.training.loop import train
from twinframe.training.runner import Trainer

HRM = registry.get("hrm")
H_CFG, H_RUN = HRM.config("tiny"), HRM.run_config("tiny")
ALT = registry.get("altlas")
A_CFG = ALT.config("tiny").replace(max_gen_len=8)
A_RUN = ALT.run_config("tiny").replace(batch_size=2)


def _same(a, b) -> bool:
    fa, fb = flatten_tree(a), flatten_tree(b)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def _poison_tree(spec, cfg, key):
    """grads -> grads with element 0 of the leaf of torch key `key` set to NaN."""
    path = tuple(map(str, spec.layout(cfg).params.by_key()[key].path))

    def poison(grads):
        def one(p, g):
            here = tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in p)
            return g.at[(0,) * g.ndim].set(jnp.nan) if here == path else g

        return jax.tree_util.tree_map_with_path(one, grads)

    return poison


def _poison_torch(spec, key):
    def make_torch(c, init):
        m = spec.make_torch(c, init)

        def hook(g):
            g = g.clone()
            g.view(-1)[0] = float("nan")
            return g

        dict(m.named_parameters())[key].register_hook(hook)
        return m

    return make_torch


@functools.cache
def hrm_poisoned(key: str):
    poison = _poison_tree(HRM, H_CFG, key)

    def make_train_step(cfg, tx):
        def step(params, opt_state, consts, carry, noise):  # f_hrm.train_step, grads poisoned
            _, out, grads = f_hrm.loss_and_grads(params, consts, carry, noise, cfg)
            grads = poison(grads)
            updates, opt_state = tx.update(grads, opt_state, params)
            metrics = {**out.metrics, "grad_global_norm": global_norm(grads)}
            return (optax.apply_updates(params, updates), opt_state,
                    out._replace(metrics=metrics))

        return jax.jit(step, donate_argnums=(0, 1, 3))

    return dataclasses.replace(HRM, make_train_step=make_train_step,
                               make_torch=_poison_torch(HRM, key))


@functools.cache
def altlas_poisoned(key: str):
    poison = _poison_tree(ALT, A_CFG, key)

    def make_train_step(cfg, tx):
        def step(params, opt_state, b):  # f_alt.train_step (B_eff > 0), grads poisoned
            loss, aux, grads = f_alt.loss_and_grads(params, b.tokens, b.valid, b.advantages,
                                                    b.weights, b.beta, cfg)
            grads = poison(grads)
            updates, opt_state = tx.update(grads, opt_state, params)
            out = f_alt.LearnOut(loss, aux.policy_term, aux.entropy_term,
                                 f_alt.global_norm_torch(grads), jnp.bool_(False))
            return optax.apply_updates(params, updates), opt_state, out

        return jax.jit(step, donate_argnums=(0, 1))

    return dataclasses.replace(ALT, make_train_step=make_train_step,
                               make_torch=_poison_torch(ALT, key))


H_KEY = HRM.layout(H_CFG).trainable_keys()[2]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_hrm_stops_at_the_step_naming_the_gradient(tmp_path, framework):
    train(HRM, H_CFG, H_RUN, framework, 2, tmp_path, every=1, show_progress=False)
    good = checkpoint.load(checkpoint.latest(tmp_path))
    with pytest.raises(NonFiniteError) as e:
        train(hrm_poisoned(H_KEY), H_CFG, H_RUN, framework, 3, tmp_path, every=1,
              resume=tmp_path, show_progress=False)
    size = int(np.prod(HRM.layout(H_CFG).params.by_key()[H_KEY].shape))
    assert str(e.value).startswith(f"step 3: non-finite gradient '{H_KEY}' (1 NaN, 0 Inf of "
                                   f"{size}); stopped")
    assert "\n" not in str(e.value) and "checkpoint-2" in str(e.value)
    assert checkpoint.steps(tmp_path) == [1, 2]
    assert _same(checkpoint.load(checkpoint.latest(tmp_path))["model"], good["model"])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_hrm_skip_drops_the_update_and_goes_on(framework, tmp_path):
    tr, recs = train(hrm_poisoned(H_KEY), H_CFG, H_RUN, framework, 2, tmp_path,
                     show_progress=False, on_nonfinite="skip")
    assert [r["nonfinite"].split(" (")[0] for r in recs] == [f"gradient '{H_KEY}'"] * 2
    assert tr.t == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["nonfinite"] for x in lines] == [r["nonfinite"] for r in recs]
    init = HRM.canonical_init(H_CFG, H_RUN.seed)
    st = tr.engine.export_state()
    assert float(np.asarray(st["opt"]["count" if framework == "jax" else "step"])) == 0
    now = tr.params_torch_layout()
    assert all(np.array_equal(now[k], init[k]) for k in now)
    assert all(np.isfinite(v).all() for v in st["carry"].values())
    tr.close()


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_hrm_nonfinite_parameter_is_named_first(framework):
    key = HRM.layout(H_CFG).trainable_keys()[1]
    tr = Trainer(HRM, H_CFG, H_RUN, framework)
    st = tr.export_state()
    flat = HRM.layout(H_CFG).table.by_key()
    model = st["model"] if framework == "torch" else HRM.layout(H_CFG).table.tree_to_torch(
        st["model"])
    model[key] = model[key].copy()
    model[key].reshape(-1)[3] = np.inf
    st["model"] = model if framework == "torch" else HRM.layout(H_CFG).table.torch_to_tree(
        model)
    tr.import_state(st)
    rec = tr.train_step()
    size = int(np.prod(flat[key].shape))
    assert rec["nonfinite"] == f"parameter '{key}' (0 NaN, 1 Inf of {size})"
    tr.close()


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_altlas_nonfinite_update_changes_nothing(framework):
    """AltLAS clips by the global norm (a NaN spreads to every gradient): the raw gradients are
    recomputed to name the culprit; torch's update is aborted by the optimizer's pre-step hook."""
    from twinframe.parity.altlas import ToyRewardHost

    key = ALT.layout(A_CFG).trainable_keys()[-1]
    tr = Trainer(altlas_poisoned(key), A_CFG, A_RUN, framework,
                 host=ToyRewardHost(A_CFG, A_RUN))
    before = tr.engine.export_state()
    rec = tr.train_step()
    assert rec["nonfinite"].startswith(f"gradient '{key}' (1 NaN, 0 Inf of ")
    after = tr.engine.export_state()
    assert _same(after["model"], before["model"]) and _same(after["opt"], before["opt"])
    tr.close()
