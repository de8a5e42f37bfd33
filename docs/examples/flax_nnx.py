# A public HRM-ACT checkpoint as a Flax NNX module: load, one training step, save with orbax.
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

import twinframe.flax
from twinframe import registry
from twinframe.store import io
from twinframe.tasks import sudoku

# 1. weights in the public (ZT) layout: torch keys, no twinframe metadata needed
state, _ = io.read_torch("hrm_act.safetensors")
spec = registry.get("hrm")
cfg = spec.recognise(state)  # the model config, read from the key set and shapes

# 2. the NNX module: nnx.Param leaves = the pure JAX params; the ACT carry is Carry state
B = 8
model = twinframe.flax.module("hrm", cfg, state, rngs=nnx.Rngs(0), batch_size=B)
tx = spec.jax_optimizer(spec.run_config("tiny"))  # the model's optax transformation
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

# 3. one ACT training step on Sudoku puzzles
stream = sudoku.SudokuStream(seed=0)
boards = [stream.next_puzzle(stage=0)[2:] for _ in range(B)]
inputs, targets = (np.stack(x) for x in zip(*boards, strict=True))
segments = np.zeros(B, np.int32)
noise = sudoku.exploration_noise(seed=0, t=1, batch=B, max_steps=cfg.halt_max_steps)


@nnx.jit
def train_step(model, optimizer, segments, inputs, targets, noise):
    def loss_fn(model):
        return model.loss(segments, inputs, targets, noise)

    (loss, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, out.halted


loss, halted = train_step(model, optimizer, segments, inputs, targets, noise)
model.reset_carry(halted)  # halted puzzles start again from the initial state

# 4. save the NNX state with orbax; restore it into the abstract module with nnx.merge
path = Path("hrm_nnx").absolute()
with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, nnx.state(model))
graphdef, abstract = nnx.split(twinframe.flax.abstract_module("hrm", cfg, batch_size=B))
with ocp.StandardCheckpointer() as ckptr:
    restored = nnx.merge(graphdef, ckptr.restore(path, abstract))
