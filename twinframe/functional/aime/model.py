"""AIME-core world model in JAX (aime.md §2.6, §6.1): the training forward over a clip with
`lax.scan` over time, threading the mutable state (spectral-norm vectors, BatchNorm statistics)
in the call order of the reference; VQ codebook updates happen in the perceiver before the scan.

`forward(params, frozen, teacher, batch, cfg) -> (tasks [n], aux)`:
- frozen = {'state': {sn, bn, vq}, 'consts', 'fixed'}; teacher = the EMA encoder tree;
- batch = {'x' [B,T,3,H,W], 'actions' [B,T,A], 'noise' (time-leading arrays), 'hyper'
  (f32 scalars), 'override' (reference decisions), 'use_override' (bool)};
- aux = {'parts', 'metrics', 'decisions' (own), 'state' (new)}.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from twinframe.functional.aime import attention, nvae, prior
from twinframe.functional.aime.perceiver import global_context
from twinframe.functional.aime.prims import flat_state, lstm_step, unflat_state
from twinframe.models.aime import AIMEConfig

STEP_NOISE = ("u_perm", "u_kuma", "gamma_normal", "gamma_uniform", "gamma_boost")


def forward(params: Mapping, frozen: Mapping, teacher: Mapping, batch: Mapping,
            cfg: AIMEConfig, n_tasks: int = 3) -> tuple[jax.Array, dict]:
    x, actions, noise, hyper = batch["x"], batch["actions"], batch["noise"], batch["hyper"]
    state = frozen["state"]
    B, T = x.shape[:2]
    R, L = cfg.attention_resolution, cfg.lstm_layers
    ctx = global_context(params, frozen.get("fixed", {}), frozen["consts"], state["vq"], x,
                         hyper, cfg, batch.get("override"), batch.get("use_override", False))
    st0 = {**flat_state(state["sn"]), **flat_state(state["bn"])}
    teacher = jax.lax.stop_gradient(teacher)
    pe, pd, pp = params["encoder"], params["decoder"], params["prior"]
    att = params["attention_prior_posterior"]

    def body(carry, xs):
        h, c, c_prev, a_prev, z_prev, st = carry
        st = dict(st)
        o, a_t, c_t, nz, t = xs
        z, mu_q, lv_q, levels = nvae.encoder(pe, st, o, nz["eps_z"], cfg)
        mdl = nvae.decoder(pd, st, z, levels, cfg)
        _, t_levels = nvae.encoder_features(pe, st, o, cfg, teacher)
        t_levels = [jax.lax.stop_gradient(v) for v in t_levels]
        gram = nvae.gram_loss(levels, t_levels)
        post = attention.posterior(att["posterior_net"], o, h[-1], c_t, cfg)
        s_att = attention.phi_attention(params["phi_attention"], post["bottleneck"],
                                        post["coords"], nz["eps_att"])
        h_tilde = jnp.concatenate([h[-1], c_prev], -1)
        pr = prior.dpgmm(pp, st, h_tilde, {k: nz[k] for k in STEP_NOISE}, cfg)
        recon = jnp.mean(nvae.mdl_nll(mdl, o))
        kl_z = prior.mc_kl(mu_q, lv_q, pr["pi"], pr["mu"], pr["logvar"], nz["xi_mc"])
        hier = prior.hierarchical_kl(pp, st, pr, h_tilde, cfg)
        ent = prior.cluster_entropy(pr["pi"])
        cx, cy = attention.centre_of_mass(post["map"])
        pmap, dx, dy = attention.attention_prior(att["prior_net"], a_prev, h[-1], z_prev, cfg)
        akl = attention.attention_kl(post["map"], pmap)
        srt = -jnp.sort(-jax.lax.stop_gradient(pr["pi"]), -1)
        keff = jnp.mean((1 + jnp.sum(jnp.cumsum(srt, -1) < 0.999, -1)).astype(jnp.float32))
        h2, c2 = lstm_step(params["_rnn"]["lstm"], jnp.concatenate([z, c_t, s_att, a_t], -1),
                           h, c, L)
        ys = {"recon": recon, "kl_z": kl_z, "hier": hier, "ent": ent, "gram": gram,
              "div": post["div"], "att_kl": akl, "cx": cx, "cy": cy,
              "dx": jnp.mean(dx, (1, 2)), "dy": jnp.mean(dy, (1, 2)), "keff": keff,
              "kmax": jnp.mean(srt[:, 0])}
        return (h2, c2, c_t, post["map"], z, st), ys

    h0 = jnp.broadcast_to(params["h0"], (L, B, cfg.hidden_dim))
    c0 = jnp.broadcast_to(params["c0"], (L, B, cfg.hidden_dim))
    carry0 = (h0, c0, jnp.zeros((B, cfg.context_dim)), jnp.full((B, R, R), 1.0 / (R * R)),
              jnp.zeros((B, cfg.latent_dim)), st0)
    xs = (x.transpose(1, 0, 2, 3, 4), actions.transpose(1, 0, 2), ctx["context"].transpose(
        1, 0, 2), dict(noise), jnp.arange(T))
    (_, _, _, _, _, st_end), ys = jax.lax.scan(body, carry0, xs)
    parts = {k: jnp.mean(ys[k]) for k in ("recon", "kl_z", "hier", "ent", "gram", "div")}
    parts["att_kl"] = jnp.mean(ys["att_kl"][1:])
    cx, cy = ys["cx"], ys["cy"]
    parts["dyn"] = (attention.smooth_l1(ys["dx"][1:], cx[1:] - cx[:-1])
                    + attention.smooth_l1(ys["dy"][1:], cy[1:] - cy[:-1]))
    parts.update(perc=ctx["perc"], ce=ctx["ce"], vq=ctx["vq_loss"])
    beta = hyper["beta"]
    elbo = (hyper["lambda_recon"] * parts["recon"] + beta * parts["kl_z"] + beta * parts["hier"]
            - hyper["entropy_weight"] * parts["ent"] + hyper["lambda_gram"] * parts["gram"])
    pred = beta * parts["att_kl"] + hyper["lambda_att_dyn"] * parts["dyn"] + parts["div"]
    tasks = jnp.stack([elbo, ctx["loss"], pred] + [jnp.zeros((), elbo.dtype)] * (n_tasks - 3))
    new_state = {"sn": unflat_state(st_end, state["sn"]), "bn": unflat_state(st_end, state["bn"]),
                 "vq": ctx["vq"]}
    metrics = {"token_acc": ctx["token_acc"], "k_eff": jnp.mean(ys["keff"]),
               "max_pi": jnp.mean(ys["kmax"])}
    return tasks, {"parts": parts, "metrics": metrics, "decisions": ctx["decisions"],
                   "state": new_state, "recon": ctx["recon"]}
