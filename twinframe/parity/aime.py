"""AIME-core parity levels (aime.md §7): thunks returning Comparisons (torch = reference,
JAX = candidate). L0 primitives and golden values (aime.md §8, §6.3), L1 each module forward
(each JAX module jitted alone), L2/L3/L4 from one call of the whole training step (one
compilation shared with the engines), L4 optimiser and RGB on identical inputs. L5 (curve) and
L6 (round trip) are generic."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from twinframe.functional import rgb as f_rgb
from twinframe.functional.aime import attention as f_att
from twinframe.functional.aime import model as f_model
from twinframe.functional.aime import nvae as f_nvae
from twinframe.functional.aime import optim as f_opt
from twinframe.functional.aime import perceiver as f_per
from twinframe.functional.aime import prims as f_pr
from twinframe.functional.aime import prior as f_prior
from twinframe.models.aime import (
    EMA_PREFIX,
    NEVER_REACHED,
    AIMEConfig,
    AIMERun,
    canonical_init,
    ema_keys,
)
from twinframe.models.aime import noise as aime_noise
from twinframe.models.aime.schedule import hyper as step_hyper
from twinframe.models.layout import apply_rule
from twinframe.parity.compare import Comparison
from twinframe.parity.optim_inputs import grads_and_moments, prime_torch_optimizer
from twinframe.parity.twins import Twins
from twinframe.tasks import sprites
from twinframe.torch_ref.aime import attention as t_att
from twinframe.torch_ref.aime import nvae as t_nvae
from twinframe.torch_ref.aime import perceiver as t_per
from twinframe.torch_ref.aime import prims as t_pr
from twinframe.torch_ref.aime import prior as t_prior
from twinframe.torch_ref.aime import train as t_train


def _spec():
    from twinframe import registry

    return registry.get("aime")


def _t(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _cmp(level: str, name: str, ref: Any, cand: Any, tol: str, note: str = "") -> Comparison:
    r, c = _np(ref), _np(cand)
    if r.dtype.kind in "iub" or c.dtype.kind in "iub":
        r, c = r.astype(np.int64), c.astype(np.int64)
    return Comparison(level, name, r, c, tol, "float32", note)


# ----------------------------------------------------------------------------------------------
# L0: goldens (aime.md §8, §6.3) and primitives

KUMA_GOLDEN = [  # (u, log a, log b) -> (v, dv/dlog a, dv/dlog b)
    ((0.1, 0.0, 0.0), (0.900000036, 0.0948244631, -0.230258495)),
    ((0.5, 0.5, -0.5), (0.792188406, 0.184545055, -0.257124245)),
    ((0.9, -1.0, 1.0), (0.000138045914, 0.00122694159, -0.000368022243)),
    ((0.3, 2.0, 1.5), (0.822297692, 0.160884842, -0.0970062912)),
    ((0.999999, 5.0, -5.0), (0.942414522, 0.0558946729, -0.00634946255)),
]
KUMA_BETA_GOLDEN = [((1, 1, 1), 1.18e-5), ((0.5, 2, 3), 0.3520846), ((2, 0.5, 1), 0.6931313),
                    ((1, 5, 5), 0.0), ((3, 3, 0.5), 0.5204948), ((0.2, 0.2, 2), 2.860966),
                    ((10, 10, 1), 1.069102)]
GAMMA_KL_GOLDEN = [((1.9477, 0.9481, 6, 2), 0.9167184), ((0.9481, 1.9477, 6, 2), 7.9862223),
                   ((2, 1, 1, 10), 16.1201992)]
RGB_G1 = [[1, 0, 0, 2, 0, 1], [0, 1, 0, -1, 0.5, 0], [-1, 0.2, 1, 0, 0, 0.3]]
RGB_G2 = [[0.5, 0.1, 0, 1, 0, 1], [0, 2, 0, -1, 0.5, 0], [-1, 0, 1, 0, 0.3, 0.3]]
RGB_GOLDEN = {
    "step1.G": [-0.0923135, 0.2679015, 0.2283962, 0.0499433, 0.1111111, 0.2046016],
    "step2.G": [-0.1175696, 0.3247146, 0.2352670, 0.0793185, 0.1449268, 0.2986435],
    "step2.alpha": [0.0233583, 0.0220588, 0.0204329],
    "zero.step2.G": [-0.1404881, 0.3929413, 0.3019819, 0.0878616, 0.1712988, 0.3403785],
    "zero.step2.alpha": [0.0116792, 0.0110294, 0.0102164, 1.5707953],
    "paper.step1.G": [-0.1035314, 0.3315297, 0.2764770, 0.0696570, 0.1381171, 0.2558887],
    "paper.step1.alpha": [0.1315218, 0.1211169, 0.0965723],
}


def _golden(name: str, got: Any, want: Any, tol: str = "aime.L0.golden") -> Comparison:
    return _cmp("L0", name, np.asarray(want, np.float64).astype(np.float32), got, tol)


def _kuma_torch(u: float, la: float, lb: float) -> tuple[float, float, float]:
    a, b = torch.tensor([la], requires_grad=True), torch.tensor([lb], requires_grad=True)
    v = t_pr.kumaraswamy_sample(a, b, torch.tensor([u]))
    ga, gb = torch.autograd.grad(v.sum(), [a, b])
    return float(v.detach()), float(ga), float(gb)


@jax.jit
def _kuma_jax(u, la, lb):
    v, vjp = jax.vjp(lambda a, b: f_pr.kumaraswamy_sample(a, b, u), la, lb)
    return v, *vjp(jnp.ones_like(v))


def _rgb_runs(run: AIMERun, steps: list, n: int) -> tuple[list, list]:
    """RGB on a list of [n, P] task-gradient arrays, torch and JAX, from a fresh state."""
    st_t = t_train.rgb_init(steps[0].shape[1], n)
    tx = f_rgb.rgb(n, run.rgb_mu, run.rgb_lambda, run.rgb_steps, run.rgb_lr, run.rgb_interval)
    st_j = tx.init(jnp.zeros(steps[0].shape[1]))
    upd = jax.jit(tx.update)
    out_t, out_j = [], []
    for g in steps:
        G, st_t = t_train.rgb_step(torch.tensor(g, dtype=torch.float32), st_t, run)
        out_t.append((G.numpy(), st_t.alpha.numpy().copy()))
        Gj, st_j = upd(jnp.asarray(g, jnp.float32), st_j)
        out_j.append((np.asarray(Gj), np.asarray(st_j.rgb_alpha)))
    return out_t, out_j


def level_l0_goldens(run: AIMERun) -> list[Comparison]:
    out = []
    for (u, la, lb), want in KUMA_GOLDEN:
        tag = f"kuma(u={u},la={la},lb={lb})"
        out.append(_golden(f"{tag}.torch", _kuma_torch(u, la, lb), want))
        v, ga, gb = _kuma_jax(jnp.float32(u), jnp.float32(la), jnp.float32(lb))
        out.append(_golden(f"{tag}.jax", [float(v), float(ga), float(gb)], want))
    for (a, b, bp), want in KUMA_BETA_GOLDEN:
        args = [np.float32(a), np.float32(b), np.float32(1.0), np.float32(bp)]
        kt = t_prior.kumar_beta_kl(*map(lambda x: torch.tensor([x]), args), 10)
        kj = f_prior.kumar_beta_kl(*map(lambda x: jnp.asarray([x]), args), 10)
        tag = f"kuma_beta_kl(a={a},b={b},beta={bp})"
        out.append(_golden(f"{tag}.torch", kt, [want], "aime.L0.golden_kl"))
        out.append(_golden(f"{tag}.jax", kj, [want], "aime.L0.golden_kl"))
    for (k, r, a0, b0), want in GAMMA_KL_GOLDEN:
        tag = f"gamma_kl({k},{r};{a0},{b0})"
        ten = [torch.tensor([float(x)]) for x in (k, r)] + [torch.tensor(float(a0)),
                                                              torch.tensor(float(b0))]
        out.append(_golden(f"{tag}.torch", t_prior.gamma_kl(*ten), want, "aime.L0.golden_kl"))
        out.append(_golden(f"{tag}.jax", f_prior.gamma_kl(
            jnp.asarray([k], jnp.float32), jnp.asarray([r], jnp.float32), jnp.float32(a0),
            jnp.float32(b0)), want, "aime.L0.golden_kl"))
    v = np.array([[0.5, 0.25, 0.8, 0.1]], np.float32)
    perm = np.argsort(np.array([[0.7, 0.1, 0.9, 0.3]]), kind="stable")
    for tag, pm, want in (("stick", None, [0.5, 0.125, 0.3, 0.0075, 0.0675]),
                          ("stick_perm", perm, [0.3, 0.5, 0.0075, 0.125, 0.0675])):
        out.append(_golden(f"{tag}.torch", t_prior.stick_breaking(
            _t(v), None if pm is None else _t(pm)), [want]))
        out.append(_golden(f"{tag}.jax", f_prior.stick_breaking(
            jnp.asarray(v), None if pm is None else jnp.asarray(pm)), [want]))
    y = np.zeros((1, 20, 1, 1), np.float32)
    for k, (lg, mu, ls, c) in enumerate((
            (0.3, (0.1, -0.3, 0.5), (-2, -1.5, -3), (0.2, -0.4, 0.1)),
            (-0.2, (0, 0.2, -0.9), (-1, -2.5, -2), (0, 0.3, -0.2)))):
        y[0, 10 * k:10 * k + 10, 0, 0] = [lg, *mu, *ls, *c]  # raw: the coupling is tanh(c)
    for xv, want in (((0.12, -0.25, 0.4), 14.8522463), ((-1, 0, 1), 17.5234013)):
        x = np.array(xv, np.float32).reshape(1, 3, 1, 1)
        tol = "aime.L0.golden_edge" if max(map(abs, xv)) > 0.999 else "aime.L0.golden"
        out.append(_golden(f"mdl_nll{xv}.torch", t_nvae.mdl_nll(_t(y), _t(x)), [want], tol))
        out.append(_golden(f"mdl_nll{xv}.jax", f_nvae.mdl_nll(jnp.asarray(y), jnp.asarray(x)),
                           [want], tol))
    sp = np.array([1.0, -1.0], np.float32)
    out.append(_golden("softplus_half.torch", t_pr.softplus_half(_t(sp)), [1.9481540, 0.9481540]))
    out.append(_golden("softplus_half.jax", f_pr.softplus_half(jnp.asarray(sp)),
                       [1.9481540, 0.9481540]))
    g1, g2 = np.array(RGB_G1, np.float32), np.array(RGB_G2, np.float32)
    z = np.zeros((1, 6), np.float32)
    paper = run.replace(rgb_steps=3, rgb_lr=0.2, rgb_interval=1)
    for tag, r, seq, n, checks in (
            ("rgb", run, [g1, g2, g1], 3, [(0, "G", "step1.G"), (1, "G", "step2.G"),
                                          (1, "a", "step2.alpha"), (2, "G", "step1.G")]),
            ("rgb_zero_task", run, [np.concatenate([g, z]) for g in (g1, g2)], 4,
             [(1, "G", "zero.step2.G"), (1, "a", "zero.step2.alpha")]),
            ("rgb_paper", paper, [g1], 3, [(0, "G", "paper.step1.G"),
                                           (0, "a", "paper.step1.alpha")])):
        ot, oj = _rgb_runs(r, seq, n)
        for i, what, key in checks:
            j = 0 if what == "G" else 1
            out.append(_golden(f"{tag}.{key}.torch", ot[i][j], RGB_GOLDEN[key], "aime.L0.rgb"))
            out.append(_golden(f"{tag}.{key}.jax", oj[i][j], RGB_GOLDEN[key], "aime.L0.rgb"))
    return out


def level_l0_primitives(cfg: AIMEConfig, seed: int = 0) -> list[Comparison]:
    """Primitives on random inputs of the config's sizes, plus the default-only tokenizer paths
    (non-temporal Down3D/Up3D, time-axis skip resize) at small channel counts."""
    rng = np.random.default_rng([seed, 120])
    out: list[Comparison] = []

    def rnd(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    x5 = rnd(2, 4, 5, 8, 8)
    w_down = rnd(6, 4, 4, 4, 4, s=0.1)
    for temporal in (True, False):
        st, pd = ((2, 2, 2), (1, 1, 1)) if temporal else ((1, 2, 2), (0, 1, 1))
        ref = torch.nn.functional.conv3d(_t(x5), _t(w_down), None, st, pd)
        out.append(_cmp("L0", f"conv3d(k4,temporal={temporal})", ref,
                        f_pr.conv(jnp.asarray(x5), jnp.asarray(w_down), None, st, pd),
                        "aime.L0.matmul"))
        wt, bt = rnd(6, 3, 4, 4, 4, s=0.1), rnd(3, s=0.1)
        xt = rnd(2, 6, 2, 4, 4)
        ref = torch.nn.functional.conv_transpose3d(_t(xt), _t(wt), _t(bt), st, pd)
        out.append(_cmp("L0", f"conv_transpose3d(temporal={temporal})", ref,
                        f_pr.conv_transpose3d({"kernel": jnp.asarray(wt), "bias": jnp.asarray(bt)},
                                              jnp.asarray(xt), st, pd), "aime.L0.matmul"))
    for shape in ((4, 8, 8), (7, 16, 16)):
        ref = torch.nn.functional.interpolate(_t(x5), size=shape, mode="trilinear",
                                              align_corners=False)
        out.append(_cmp("L0", f"resize3d{shape}", ref, f_pr.resize(jnp.asarray(x5), shape),
                        "aime.L0.primitive"))
    x4 = rnd(2, 8, 9, 9)
    ref = torch.nn.functional.interpolate(_t(x4), size=(4, 4), mode="bilinear",
                                          align_corners=False)
    out.append(_cmp("L0", "resize2d(9->4)", ref, f_pr.resize(jnp.asarray(x4), (4, 4)),
                    "aime.L0.primitive"))
    g, b = rnd(8), rnd(8)
    out.append(_cmp("L0", "group_norm", torch.nn.functional.group_norm(_t(x4), 4, _t(g), _t(b)),
                    f_pr.group_norm({"scale": jnp.asarray(g), "bias": jnp.asarray(b)},
                                    jnp.asarray(x4), 4), "aime.L0.primitive"))
    xl = rnd(3, 8)
    out.append(_cmp("L0", "layer_norm(eps1e-6)", torch.nn.functional.layer_norm(
        _t(xl), (8,), _t(g), _t(b), 1e-6), f_pr.layer_norm(
        {"scale": jnp.asarray(g), "bias": jnp.asarray(b)}, jnp.asarray(xl), 1e-6),
        "aime.L0.primitive"))
    out.append(_cmp("L0", "gelu(exact)", torch.nn.functional.gelu(_t(xl)),
                    f_pr.gelu(jnp.asarray(xl)), "aime.L0.primitive"))
    # spectral norm step (conv weight) and BatchNorm (train)
    w, u, v = rnd(6, 4, 3, 3), rnd(6), rnd(36)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    sn = t_pr.SNConv(6, 4, 3, 1, 1)
    sn.load_state_dict({"weight_orig": _t(w), "weight_u": _t(u), "weight_v": _t(v)})
    sn.train()
    weff_t = sn.effective_weight()
    weff_j, uj, vj = f_pr.sn_weight(jnp.asarray(w), jnp.asarray(u), jnp.asarray(v))
    out += [_cmp("L0", "sn.W_eff", weff_t, weff_j, "aime.L0.primitive"),
            _cmp("L0", "sn.u", sn.weight_u, uj, "aime.L0.primitive"),
            _cmp("L0", "sn.v", sn.weight_v, vj, "aime.L0.primitive")]
    bn = t_pr.BN2d(8)
    rm, rv = rnd(8), np.abs(rnd(8)) + 0.5
    bn.load_state_dict({"weight": _t(g), "bias": _t(b), "running_mean": _t(rm),
                        "running_var": _t(rv), "num_batches_tracked": torch.tensor(3)})
    bn.train()
    yt = bn(_t(x4))
    st = {"bn.mean": jnp.asarray(rm), "bn.var": jnp.asarray(rv), "bn.count": jnp.int32(3)}
    yj = f_pr.batch_norm_train({"scale": jnp.asarray(g), "bias": jnp.asarray(b)}, st, "bn",
                               jnp.asarray(x4))
    out += [_cmp("L0", "batch_norm.y", yt, yj, "aime.L0.primitive"),
            _cmp("L0", "batch_norm.running_mean", bn.running_mean, st["bn.mean"],
                 "aime.L0.primitive"),
            _cmp("L0", "batch_norm.running_var", bn.running_var, st["bn.var"],
                 "aime.L0.primitive"),
            _cmp("L0", "batch_norm.count", bn.num_batches_tracked, st["bn.count"],
                 "aime.L0.decision")]
    # VQ: distances, ids, EMA update, distance gradient (both modes), rotation trick gradient
    V, Dc = cfg.num_codes, cfg.code_dim
    xv, E, E2 = rnd(24, Dc), rnd(V, Dc, s=0.3), rnd(V, Dc, s=0.3)
    for mode, e_grad in (("forward", None), ("step_end", E2)):
        xt = _t(xv).requires_grad_(True)
        dt = t_per.vq_distances(xt, _t(E), None if e_grad is None else _t(e_grad))
        ids = dt.argmax(-1)
        lt = t_per.vq_loss(dt, ids, 6, cfg)
        (gt,) = torch.autograd.grad(lt, xt)

        def lj(x, e_grad=e_grad):
            d = f_per.vq_distances(x, jnp.asarray(E), None if e_grad is None else
                                   jnp.asarray(e_grad))
            i = jnp.argmax(d, -1)
            return f_per.vq_loss(d, i, 6, cfg), (d, i)

        (lv, (dj, ij)), gj = jax.value_and_grad(lj, has_aux=True)(jnp.asarray(xv))
        out += [_cmp("L0", f"vq.{mode}.dist", dt, dj, "aime.L0.matmul"),
                _cmp("L0", f"vq.{mode}.ids", ids, ij, "aime.L0.decision"),
                _cmp("L0", f"vq.{mode}.loss", lt, lv, "aime.L0.matmul"),
                _cmp("L0", f"vq.{mode}.grad_x", gt, gj, "aime.L0.matmul")]
    tok = t_per.Tokenizer(cfg)
    with torch.no_grad():
        tok.vq._codebook.embed = _t(E[None])
        tok.vq._codebook.embed_avg = _t(E[None] * 0.9)
        tok.vq._codebook.cluster_size = _t(np.abs(rnd(1, V)) + 0.5)
    ids = np.asarray(rng.integers(0, V, 24))
    vq_j = {"embed": jnp.asarray(E[None]), "embed_avg": jnp.asarray(E[None] * 0.9),
            "cluster_size": jnp.asarray(tok.vq._codebook.cluster_size.numpy())}
    tok.ema_update(_t(xv), _t(ids))
    new_j = f_per.ema_update(vq_j, jnp.asarray(xv), jnp.asarray(ids), cfg.vq_decay)
    for k in ("embed", "embed_avg", "cluster_size"):
        out.append(_cmp("L0", f"vq.ema_update.{k}", getattr(tok.vq._codebook, k), new_j[k],
                        "aime.L0.matmul"))
    q = rnd(24, Dc)
    xt = _t(xv).requires_grad_(True)
    rt = t_per.rotation_trick(xt, _t(q))
    (grt,) = torch.autograd.grad((rt * _t(q)).sum(), xt)
    rj, vjp = jax.vjp(lambda x: f_per.rotation_trick(x, jnp.asarray(q)), jnp.asarray(xv))
    out += [_cmp("L0", "vq.rotation_trick.value", rt, rj, "aime.L0.primitive"),
            _cmp("L0", "vq.rotation_trick.grad", grt, vjp(jnp.asarray(q))[0],
                 "aime.L0.primitive")]
    # gamma draw (same host noise) and its implicit gradient (aime.md §4 carve-out)
    kap = np.array([0.5, 0.948, 1.948, 6.0], np.float32)
    nz = aime_noise.step_noise(cfg, 4, seed, 99)
    gn, gu, gb = nz["gamma_normal"][0], nz["gamma_uniform"][0], nz["gamma_boost"][0]
    kt = _t(kap)[:, None].expand(-1, gn.shape[1]).clone().requires_grad_(True)
    xt_ = t_pr.gamma_reparam(kt, t_pr.standard_gamma_draw(kt, _t(gn), _t(gu), _t(gb)))
    (gkt,) = torch.autograd.grad(xt_.sum(), kt)

    def gj_fn(k):
        kk = jnp.broadcast_to(k[:, None], gn.shape[:2])
        return f_pr.gamma_reparam(kk, f_pr.standard_gamma_draw(kk, jnp.asarray(gn),
                                                               jnp.asarray(gu), jnp.asarray(gb)))

    xj_, vjp = jax.vjp(gj_fn, jnp.asarray(kap))
    out += [_cmp("L0", "gamma.draw", xt_, xj_, "aime.L0.primitive"),
            _cmp("L0", "gamma.implicit_grad", gkt.sum(1), vjp(jnp.ones_like(xj_))[0],
                 "aime.L2.gamma_grad")]
    return out


# ----------------------------------------------------------------------------------------------
# L1: module forwards (each JAX module jitted alone)


def _inputs(cfg: AIMEConfig, run: AIMERun, step: int = 0) -> dict:
    frames, actions = sprites.batch(run.seed, step, run.batch_size, cfg.image_size,
                                    cfg.sequence_length, cfg.action_dim)
    hy = {**step_hyper(step, run), "ema_decay": run.ema_decay}
    return {"x": sprites.model_input(frames), "actions": actions,
            "noise": aime_noise.step_noise(cfg, run.batch_size, run.seed, step + 1),
            "hyper": hy}


@functools.lru_cache(maxsize=8)
def _jit_modules(cfg: AIMEConfig) -> dict[str, Callable]:
    def context(p, frozen, x, hyper):
        return f_per.global_context(p, frozen.get("fixed", {}), frozen["consts"],
                                    frozen["state"]["vq"], x, hyper, cfg)

    def encoder(p, sn_bn, o, eps):
        st = dict(sn_bn)
        z, mu, lv, levels = f_nvae.encoder(p["encoder"], st, o, eps, cfg)
        return (z, mu, lv, levels), st

    def decoder(p, sn, z, levels):
        st = dict(sn)
        return f_nvae.decoder(p["decoder"], st, z, levels, cfg), st

    def teacher(p, sn, o, w):
        st = dict(sn)
        return f_nvae.encoder_features(p["encoder"], st, o, cfg, w)[1], st

    def posterior(p, o, h, c):
        return f_att.posterior(p["attention_prior_posterior"]["posterior_net"], o, h, c, cfg)

    def phi(p, b, c, e):
        return f_att.phi_attention(p["phi_attention"], b, c, e)

    def aprior(p, a, h, z):
        return f_att.attention_prior(p["attention_prior_posterior"]["prior_net"], a, h, z, cfg)

    def dpgmm(p, sn, h, nz, mu_q, lv_q, xi):
        st = dict(sn)
        out = f_prior.dpgmm(p["prior"], st, h, nz, cfg)
        kl = f_prior.mc_kl(mu_q, lv_q, out["pi"], out["mu"], out["logvar"], xi)
        hier = f_prior.hierarchical_kl(p["prior"], st, out, h, cfg)
        return out, kl, hier, f_prior.cluster_entropy(out["pi"]), st

    def lstm(p, x, h, c):
        return f_pr.lstm_step(p["_rnn"]["lstm"], x, h, c, cfg.lstm_layers)

    fns = dict(context=context, encoder=encoder, decoder=decoder, teacher=teacher,
               posterior=posterior, phi=phi, aprior=aprior, dpgmm=dpgmm, lstm=lstm)
    return {k: jax.jit(f) for k, f in fns.items()}


def level_l1(cfg: AIMEConfig, run: AIMERun) -> list[Comparison]:
    """Every module's forward on the same weights (Twins) and inputs; mutable state after it."""
    tw = Twins.build(_spec(), cfg, seed=run.seed)
    model, p, frozen = tw.torch_model, tw.params, tw.frozen
    model.train()
    fns = _jit_modules(cfg)
    inp = _inputs(cfg, run)
    x, hy = inp["x"], inp["hyper"]
    hyj = {k: jnp.float32(v) for k, v in hy.items()}
    nz = inp["noise"]
    out: list[Comparison] = []
    L = "L1"
    tol = "aime.L1.forward"
    sn_bn = {**f_pr.flat_state(frozen["state"]["sn"]), **f_pr.flat_state(frozen["state"]["bn"])}
    # perceiver context path (both VQ updates)
    with torch.no_grad():
        ct = t_per.global_context(model.perceiver_model, _t(x), hy)
    cj = fns["context"](p, frozen, jnp.asarray(x), hyj)
    for k in ("ids_full", "ids_past", "pred"):
        out.append(_cmp(L, f"context.decisions.{k}", ct.decisions[k], cj["decisions"][k],
                        "aime.L0.decision"))
    out += [_cmp(L, "context.context", ct.context, cj["context"], tol),
            _cmp(L, "context.recon", ct.recon, cj["recon"], tol),
            _cmp(L, "context.ce", ct.ce, cj["ce"], "aime.L1.loss"),
            _cmp(L, "context.vq_loss", ct.vq, cj["vq_loss"], "aime.L1.loss"),
            _cmp(L, "context.perc", ct.perc, cj["perc"], "aime.L1.loss"),
            _cmp(L, "context.loss", ct.loss, cj["loss"], "aime.L1.loss")]
    cb = model.perceiver_model.tokenizer.vq._codebook
    for k in ("embed", "embed_avg", "cluster_size"):
        out.append(_cmp(L, f"context.vq_state.{k}", getattr(cb, k), cj["vq"][k],
                        "aime.L3.state"))
    # NVAE encoder, decoder, EMA teacher pass (t = 0 frame)
    o = x[:, 0]
    with torch.no_grad():
        zt, mut, lvt, lev_t = model.encoder(_t(o), _t(nz["eps_z"][0]))
        mdl_t = model.decoder(zt, lev_t)
        shadow = {k: v.detach() for k, v in model.encoder.named_parameters()}
        _, tlev_t = model.encoder.features(_t(o), shadow)
    (zj, muj, lvj, lev_j), st1 = fns["encoder"](p, sn_bn, jnp.asarray(o), jnp.asarray(
        nz["eps_z"][0]))
    mdl_j, st2 = fns["decoder"](p, st1, zj, lev_j)
    tlev_j, st3 = fns["teacher"](p, st2, jnp.asarray(o), p["encoder"])
    out += [_cmp(L, "encoder.z", zt, zj, tol), _cmp(L, "encoder.mu", mut, muj, tol),
            _cmp(L, "encoder.logvar", lvt, lvj, tol)]
    out += [_cmp(L, f"encoder.level{i}", a, b, tol) for i, (a, b) in enumerate(
        zip(lev_t, lev_j, strict=True))]
    out += [_cmp(L, f"teacher.level{i}", a, b, tol) for i, (a, b) in enumerate(
        zip(tlev_t, tlev_j, strict=True))]
    out.append(_cmp(L, "decoder.mdl", mdl_t, mdl_j, tol))
    out.append(_cmp(L, "decoder.nll", t_nvae.mdl_nll(mdl_t, _t(o)), f_nvae.mdl_nll(
        mdl_j, jnp.asarray(o)), "aime.L1.loss"))
    sd = model.state_dict()
    for key, val in st3.items():
        if key.startswith(("encoder.", "decoder.")):
            mod, leaf = key.rsplit(".", 1)
            tk = {"u": "weight_u", "v": "weight_v", "mean": "running_mean",
                  "var": "running_var", "count": "num_batches_tracked"}[leaf]
            out.append(_cmp(L, f"state.{mod}.{tk}", sd[f"{mod}.{tk}"], val,
                            "aime.L0.decision" if leaf == "count" else "aime.L3.state"))
    # attention schema
    B, Hd, Cc = x.shape[0], cfg.hidden_dim, cfg.context_dim
    rng = np.random.default_rng([run.seed, 121])
    h = (rng.standard_normal((B, Hd)) * 0.5).astype(np.float32)
    c = (rng.standard_normal((B, Cc)) * 0.5).astype(np.float32)
    with torch.no_grad():
        pt = model.attention_prior_posterior.posterior_net(_t(o), _t(h), _t(c))
        st_att = model.phi_attention(pt["bottleneck"], pt["coords"], _t(nz["eps_att"][0]))
        R = cfg.attention_resolution
        amap = pt["map"]
        zprev = _t((rng.standard_normal((B, cfg.latent_dim))).astype(np.float32))
        pm_t, dx_t, dy_t = model.attention_prior_posterior.prior_net(amap, _t(h), zprev)
    pj = fns["posterior"](p, jnp.asarray(o), jnp.asarray(h), jnp.asarray(c))
    sj = fns["phi"](p, pj["bottleneck"], pj["coords"], jnp.asarray(nz["eps_att"][0]))
    pm_j, dx_j, dy_j = fns["aprior"](p, jnp.asarray(amap.numpy()), jnp.asarray(h),
                                      jnp.asarray(zprev.numpy()))
    for k in ("map", "coords", "bottleneck", "div"):  # coords at init: a cancellation
        out.append(_cmp(L, f"posterior.{k}", pt[k], pj[k],
                        "aime.L1.cancellation" if k == "coords" else tol))
    out += [_cmp(L, "phi_attention.state", st_att, sj, tol),
            _cmp(L, "attention_prior.map", pm_t, pm_j, tol),
            _cmp(L, "attention_prior.dx", dx_t, dx_j, tol),
            _cmp(L, "attention_prior.dy", dy_t, dy_j, tol),
            _cmp(L, "attention_kl", t_att.attention_kl(amap, pm_t),
                 f_att.attention_kl(jnp.asarray(amap.numpy()), pm_j), "aime.L1.loss")]
    del R
    # DPGMM prior + KLs + entropy
    ht = np.concatenate([h, c], -1)
    pnz = {k: nz[k][0] for k in f_model.STEP_NOISE}
    with torch.no_grad():
        prt = model.prior(_t(ht), {k: _t(v) for k, v in pnz.items()})
        klt = t_prior.mc_kl(mut, lvt, prt["pi"], prt["mu"], prt["logvar"], _t(nz["xi_mc"][0]))
        hit = t_prior.hierarchical_kl(model.prior, prt, _t(ht))
        ent_t = t_prior.cluster_entropy(prt["pi"])
    prj, klj, hij, ent_j, st4 = fns["dpgmm"](p, st3, jnp.asarray(ht),
                                              {k: jnp.asarray(v) for k, v in pnz.items()},
                                              muj, lvj, jnp.asarray(nz["xi_mc"][0]))
    for k in ("pi", "kumar_a", "kumar_b", "v", "alpha", "mu", "logvar"):
        out.append(_cmp(L, f"dpgmm.{k}", prt[k], prj[k], tol))
    out += [_cmp(L, "dpgmm.perm", prt["perm"], prj["perm"], "aime.L0.decision"),
            _cmp(L, "dpgmm.kl_z", klt, klj, "aime.L1.loss"),
            _cmp(L, "dpgmm.hierarchical_kl", hit, hij, "aime.L1.loss"),
            _cmp(L, "dpgmm.entropy", ent_t, ent_j, "aime.L1.loss")]
    sd = model.state_dict()
    for key, val in st4.items():
        if key.startswith("prior."):
            mod, leaf = key.rsplit(".", 1)
            out.append(_cmp(L, f"state.{mod}.weight_{leaf}", sd[f"{mod}.weight_{leaf}"], val,
                            "aime.L3.state"))
    # one LSTM step
    xin = (rng.standard_normal((B, cfg.lstm_input_dim))).astype(np.float32)
    hh = (rng.standard_normal((cfg.lstm_layers, B, Hd)) * 0.5).astype(np.float32)
    cc = (rng.standard_normal((cfg.lstm_layers, B, Hd)) * 0.5).astype(np.float32)
    with torch.no_grad():
        h2t, c2t = model._rnn.lstm.step(_t(xin), _t(hh), _t(cc))
    h2j, c2j = fns["lstm"](p, jnp.asarray(xin), jnp.asarray(hh), jnp.asarray(cc))
    out += [_cmp(L, "lstm.h", h2t, h2j, tol), _cmp(L, "lstm.c", c2t, c2j, tol)]
    return out


# ----------------------------------------------------------------------------------------------
# L2 / L3 / L4 from one call of the whole training step (the engines' compiled step)


def _both_engines(cfg: AIMEConfig, run: AIMERun):
    from twinframe.training.aime import AIMEHost
    from twinframe.training.runner import make_engine

    spec = _spec()
    state = canonical_init(cfg, run.seed)
    te = make_engine(spec, cfg, run, "torch", state)
    je = make_engine(spec, cfg, run, "jax", state)
    return te, je, AIMEHost(cfg, run)


INIT_CHECKS = (  # aime.md §8 "robust init checks": (record field, golden, tolerance key)
    ("div", lambda cfg: 1.0, "aime.init.diversity"),
    ("gram", lambda cfg: 0.0, "aime.init.gram"),
    ("att_kl", lambda cfg: 0.0, "aime.init.att_kl"),
    ("ce", lambda cfg: math.log(cfg.num_codes + 1), "aime.init.ce"),
    ("recon", lambda cfg: 21.2, "aime.init.recon"),
)


def init_checks(framework: str, rec: dict, cfg: AIMEConfig) -> list[Comparison]:
    """aime.md §8's robust checks of the losses at the canonical init (the single-draw loss
    values move with the init and the noise; these do not): identical slot maps (diversity 1),
    zero gates (gram 0), near-uniform attention maps (attention KL ~0), a uniform token
    predictor (CE ~ log(V+1)), reconstruction NLL 21.0-21.4."""
    return [_cmp("L1", f"init.{k}.{framework}", np.float32(want(cfg)), np.float32(rec[k]), tol)
            for k, want, tol in INIT_CHECKS]


def level_step(cfg: AIMEConfig, run: AIMERun) -> list[Comparison]:
    """One training step in both frameworks from the same state and inputs (JAX given the
    reference's decisions): the task losses and their components (L1, the full forward), every
    task's gradient on every leaf (L2), the mutable state after the step (L3), and L4: each
    framework's RGB-combined gradient G and alpha, then the JAX optimiser (clip + AdamW groups)
    and EMA teacher update applied to torch's G and torch's updated encoder (identical inputs),
    against torch's updated parameters, Adam moments and teacher.

    The updates each framework makes from its *own* G are not compared here: on leaves whose
    gradient is rounding noise (the keys of softmax attention over near-identical latents at
    init) Adam turns sign differences into full +-lr steps; that comparison is the L5 curve's,
    judged against its measured noise floor (aime.md §7 L5)."""
    te, je, host = _both_engines(cfg, run)
    inp = host.inputs()
    mt, dt = te.step(inp, None, keep_grads=True)
    mj, dj = je.step(inp, dt)
    lay = te.layout
    out: list[Comparison] = []
    for k in ("ids_full", "ids_past", "pred"):
        out.append(_cmp("L2", f"decisions.{k}", dt[k], dj[k], "aime.L0.decision"))
    names = ("elbo", "perceiver", "predictive")
    for n in names:
        out.append(_cmp("L1", f"task.{n}", mt[n], mj[n], "aime.L1.loss"))
    for k in ("recon", "kl_z", "hier", "ent", "div", "perc", "ce", "vq"):
        out.append(_cmp("L1", f"part.{k}", mt[k], mj[k], "aime.L1.loss"))
    for k in ("gram", "att_kl", "dyn"):
        out.append(_cmp("L1", f"part.{k}", mt[k], mj[k], "aime.L1.small_loss"))
    for fw, m in (("torch", mt), ("jax", mj)):
        out += init_checks(fw, m, cfg)
    tg = te.last.task_grads
    jg = jax.device_get(je.last_out["task_grads"])
    sub = lay.params
    reached = [k for k in lay.trainable_keys() if k not in NEVER_REACHED]
    for i, n in enumerate(names):
        ji = sub.tree_to_torch(jax.tree_util.tree_map(lambda a, i=i: np.asarray(a)[i], jg))
        num = den_t = den_j = 0.0
        for k in reached:
            a, b = tg[k][i].astype(np.float64), ji[k].astype(np.float64)
            tol = "aime.L2.gamma_grad" if ".alpha_posterior." in k else "aime.L2.grad"
            out.append(_cmp("L2", f"grad.{n}.{k}", tg[k][i], ji[k], tol))
            num += float(np.sum(a * b))
            den_t += float(np.sum(a * a))
            den_j += float(np.sum(b * b))
        cos = num / math.sqrt(max(den_t * den_j, 1e-300))
        out.append(Comparison("L2", f"grad.{n}.cosine_gap", np.zeros(1), np.array([1 - cos]),
                              "aime.L2.cosine", note=f"cosine {cos:.9f}"))
    # L3: mutable state after the step
    sd = te.model.state_dict()
    state_j = lay.table.tree_to_torch(_full_tree(je))
    for r in lay.table.unique_rows():
        if r.path[0] == "state":
            tol = "aime.L0.decision" if r.dtype != "float32" else "aime.L3.state"
            out.append(_cmp("L3", f"state.{r.torch_key}", sd[r.torch_key],
                            state_j[r.torch_key], tol))
    # L4: RGB output and alpha of each framework
    G_t = te.last.G
    G_j = sub.tree_to_torch(jax.device_get(je.last_out["G"]))
    G_jflat = np.concatenate([G_j[k].reshape(-1) for k in reached])
    out.append(_cmp("L4", "rgb.G", G_t, G_jflat, "aime.L4.rgb"))
    out.append(_cmp("L4", "rgb.alpha", np.asarray(mt["alpha"]), np.asarray(mj["alpha"]),
                    "aime.L4.rgb"))
    out += _update_from_torch_grad(cfg, run, te, G_t, reached)
    return out


@functools.lru_cache(maxsize=4)
def _jit_update(cfg: AIMEConfig, run: AIMERun) -> tuple[Callable, Callable]:
    """The JAX optimiser after RGB (clip + AdamW groups, first step) and the EMA teacher
    update, each jitted alone (seconds to compile)."""
    from twinframe.functional.aime.train import ema_update

    inner = f_opt.make_optimizer(run).inner

    def update(G, params):
        upd, st = inner.update(G, inner.init(params), params)
        return optax.apply_updates(params, upd), st

    def ema(enc, shadow, n, decay):
        return ema_update(enc, shadow, n, decay)

    return jax.jit(update), jax.jit(ema)


def _update_from_torch_grad(cfg: AIMEConfig, run: AIMERun, te, G_t: np.ndarray,
                         reached: list[str]) -> list[Comparison]:
    """L4 from identical inputs: torch's G applied by the JAX optimiser to the pre-step
    parameters; torch's updated encoder folded into the pre-step teacher by the JAX EMA."""
    from twinframe.models.layout import flatten_tree

    lay = te.layout
    sub = lay.params
    p0 = canonical_init(cfg, run.seed)
    named = dict(te.model.named_parameters())
    G = {k: np.zeros(tuple(named[k].shape), np.float32) for k in lay.trainable_keys()}
    off = 0
    for k in reached:
        n = int(np.prod(G[k].shape))
        G[k] = G_t[off:off + n].reshape(G[k].shape)
        off += n

    def tree(d: dict) -> Any:
        return jax.tree_util.tree_map(jnp.asarray, sub.torch_to_tree(
            {k: d[k] for k in lay.trainable_keys()}))

    update, ema = _jit_update(cfg, run)
    params0 = tree(p0)
    new, st = update(tree(G), params0)
    params_j = sub.tree_to_torch(jax.device_get(new))
    adam = st[-1]
    mu, nu = sub.tree_to_torch(jax.device_get(adam.mu)), sub.tree_to_torch(jax.device_get(adam.nu))
    pt = te.params_torch_layout()
    out = []
    for k in reached:
        out.append(_cmp("L4", f"adamw.param.{k}", pt[k], params_j[k], "aime.L4.optimizer"))
        ost = te.opt.state[named[k]]
        out.append(_cmp("L4", f"adamw.exp_avg.{k}", ost["exp_avg"], mu[k], "aime.L4.optimizer"))
        out.append(_cmp("L4", f"adamw.exp_avg_sq.{k}", ost["exp_avg_sq"], nu[k],
                        "aime.L4.optimizer"))
    shadow, _ = ema(tree(pt)["encoder"], params0["encoder"], jnp.int32(0),
                    jnp.float32(run.ema_decay))
    flat = flatten_tree({"params": {"encoder": jax.device_get(shadow)}})
    rows = lay.table.by_key()
    ct = te.export_carry()
    for k in ema_keys(cfg):
        jk = apply_rule(rows[k].rule, np.asarray(flat[rows[k].path]))
        out.append(_cmp("L4", f"ema.{k}", ct[f"{EMA_PREFIX}{k}"], jk, "aime.L4.optimizer"))
    return out


def _full_tree(engine) -> dict:
    return {"params": jax.device_get(engine.params), **jax.device_get(engine.frozen)}


# ----------------------------------------------------------------------------------------------
# L4: AdamW groups and RGB on identical inputs


def level_l4_optim(cfg: AIMEConfig, run: AIMERun) -> list[Comparison]:
    spec = _spec()
    tw = Twins.build(spec, cfg, seed=run.seed)
    model = tw.torch_model
    lay = spec.layout(cfg)
    rng = np.random.default_rng([run.seed, 122])
    named = dict(model.named_parameters())
    keys = [k for k in lay.trainable_keys() if k not in NEVER_REACHED]
    g, m, v = (
        {k: np.asarray(x, np.float32) for k, x in d.items()}
        for d in grads_and_moments(rng, {k: tuple(named[k].shape) for k in keys}))
    opt = t_train.make_optimizer(model, run)
    step = 1200  # past the constant phase: the cosine schedule is exercised
    prime_torch_optimizer(opt, named, g, m, v, step=step)
    t_train.set_lr(opt, step, run)
    opt.step()
    sub = lay.params
    zeros = {k: np.zeros(tuple(named[k].shape), np.float32) for k in lay.trainable_keys()}

    def tree(d):
        return jax.tree_util.tree_map(jnp.asarray, sub.torch_to_tree({**zeros, **d}))

    tx = f_opt.adamw_torch_groups(run)
    st = tx.init(tw.params)._replace(count=jnp.asarray(step, jnp.int32), mu=tree(m), nu=tree(v))
    upd, new = jax.jit(tx.update)(tree(g), st, tw.params)
    new_p = sub.tree_to_torch(jax.device_get(optax.apply_updates(tw.params, upd)))
    mu, nu = sub.tree_to_torch(jax.device_get(new.mu)), sub.tree_to_torch(jax.device_get(new.nu))
    out = []
    for k in lay.trainable_keys():
        out.append(_cmp("L4", f"adamw.param.{k}", named[k], new_p[k], "aime.L4.optimizer"))
        if k in g:
            out.append(_cmp("L4", f"adamw.exp_avg.{k}", opt.state[named[k]]["exp_avg"], mu[k],
                            "aime.L4.optimizer"))
            out.append(_cmp("L4", f"adamw.exp_avg_sq.{k}", opt.state[named[k]]["exp_avg_sq"],
                            nu[k], "aime.L4.optimizer"))
    # RGB over random task gradients, a zero task included, four steps
    P = 257
    seq = [np.concatenate([rng.standard_normal((3, P)), np.zeros((1, P))]).astype(np.float32)
           for _ in range(4)]
    ot, oj = _rgb_runs(run.replace(rgb_zero_adv_task=True), seq, 4)
    for i, ((Gt, at), (Gj, aj)) in enumerate(zip(ot, oj, strict=True)):
        out += [_cmp("L4", f"rgb.random.step{i + 1}.G", Gt, Gj, "aime.L4.rgb"),
                _cmp("L4", f"rgb.random.step{i + 1}.alpha", at, aj, "aime.L4.rgb")]
    return out


# Trained leaves the model's function does not depend on (their gradient is exactly zero; both
# frameworks move them by Adam steps on rounding noise): key pattern -> reason.
_SHIFT = "shifts every logit of a softmax row by the same q.b"
NO_EFFECT = {
    r"perceiver_model\.model\.(encoder|temporal|decoder)_cross_attn\.attention\.k_proj\.bias":
        _SHIFT,
    r"perceiver_model\.model\.(encoder|temporal)_self_attn\.\d+\.0\.module\.attention\."
    r"k_proj\.bias": _SHIFT,
    r"attention_prior_posterior\.prior_net\.output_projection\.3\.bias":
        "added to every logit of the prior map's softmax over positions",
    r"attention_prior_posterior\.posterior_net\.slot_attn\.norm_s\.bias":
        "to_q has no bias: adds to_q(beta).k_n to every slot's logit at position n, and the "
        "slot-attention softmax runs over slots",
}


def no_effect_reason(key: str) -> str | None:
    """Why the model's function does not depend on trained tensor `key` (None if it does)."""
    import re

    return next((why for pat, why in NO_EFFECT.items() if re.fullmatch(pat, key)), None)


def judge_l5_params(level: str, tag: str, main, pert) -> list[Comparison]:
    """aime.md §7 L5: per trained leaf ||theta_jax - theta_torch|| <= 1e-2 ||theta_N - theta_0||
    (Adam turns tiny sign differences into full +-lr steps, so elementwise bounds cannot hold).
    The change scale is at least 1% of what Adam moves a leaf in N steps at full speed
    (N * lr_leaf * sqrt(size)): a leaf that moved less has a gradient below Adam's eps -- at
    init the keys of the perceiver's attention over near-identical latents, zero-initialised
    biases -- so its N-step change is lr/eps times rounding noise in either framework. Leaves
    the model's function does not depend on (`NO_EFFECT`, exact zero gradient) must only stay
    within twice that full-speed movement."""
    from twinframe.models.aime.tree import mix_code

    del pert  # no 1-ulp-start floor: it does not see rounding-noise gradients (aime.md §7 L5)
    run, (pt, pj), p0 = main.run, main.params, main.start
    steps = main.steps
    out = []
    for k in pt:
        a, b, z = (x.astype(np.float64) for x in (pt[k], pj[k], p0[k]))
        d = float(np.linalg.norm(b - a))
        change = max(float(np.linalg.norm(a - z)), float(np.linalg.norm(b - z)))
        speed = steps * run.lr * mix_code(a.ndim, k)[0] * math.sqrt(a.size)
        name = f"{tag}.params.{k}"
        why = no_effect_reason(k)
        if why:
            out.append(Comparison(level, name, np.zeros(1), np.array([d]), "aime.L5.no_effect",
                                  note=why, scale=speed))
        else:
            scale = max(change, 1e-2 * speed)
            note = (f"||theta_N - theta_0|| {change:.2e}" if change >= 1e-2 * speed else
                    f"untrained: ||theta_N - theta_0|| {change:.2e} < 1% of Adam's {speed:.2e}")
            out.append(Comparison(level, name, np.zeros(1), np.array([d]), "aime.L5.params",
                                  note=note, scale=scale))
    return out


def levels(cfg: AIMEConfig, run: AIMERun) -> dict[str, Callable[[], list[Comparison]]]:
    """Level name -> thunk, in report order. L1 runs each module at `cfg` (each jitted alone);
    the whole step (the one whole-step compilation, shared with the engines) gives the full
    forward's losses (L1), the gradients (L2), the state (L3) and RGB/AdamW/EMA (L4)."""
    def threads(fn: Callable[[], list[Comparison]]) -> Callable[[], list[Comparison]]:
        def thunk() -> list[Comparison]:
            with t_pr.torch_threads(run.torch_threads):
                return fn()
        return thunk

    return {
        "L0": threads(lambda: level_l0_primitives(cfg, run.seed) + level_l0_goldens(run)),
        "L1": threads(lambda: level_l1(cfg, run)),
        "L4-optim": threads(lambda: level_l4_optim(cfg, run)),
        "L1/L2/L3/L4": threads(lambda: level_step(cfg, run)),
    }
