"""AIME-core in pure JAX (aime.md), mirroring `twinframe.torch_ref.aime` part by part: `prims`,
`perceiver`, `nvae`, `prior`, `attention`, `model` (the training forward, `lax.scan` over time,
mutable state threaded explicitly), `optim` (AdamW with the reference's groups) and `train` (the
one jitted, donated training step; RGB lives in `twinframe.functional.rgb`)."""
