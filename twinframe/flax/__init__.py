"""Flax NNX faces of the registered models, built from the model contract.

    from flax import nnx
    from twinframe import flax as tf_flax

    model = tf_flax.module("hrm", "tiny", rngs=nnx.Rngs(0), batch_size=8)

`module` wraps a model's pure JAX functions (`ModelSpec.jax_face`) in one generic
`nnx.Module` (`TwinModule`); `checkpoint` writes and reads orbax checkpoints of its NNX state.
This package imports the `flax` library by absolute imports only (`twinframe.flax` does not
shadow it).
"""

from twinframe.flax.module import (
    KINDS,
    Buffer,
    Carry,
    Const,
    Diagnostic,
    Ema,
    Trace,
    TwinModule,
    abstract_module,
    face_of,
    layout_tree,
    module,
    values,
    variable_type,
)

__all__ = ["KINDS", "Buffer", "Carry", "Const", "Diagnostic", "Ema", "Trace", "TwinModule",
           "abstract_module", "face_of", "layout_tree", "module", "values", "variable_type"]
