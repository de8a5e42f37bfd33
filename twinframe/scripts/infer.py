"""`twinframe infer MODEL CKPT [--subset NAME] [--index J]`: run a trained model on instance J
of an evaluation subset (the model's `infer`: what a subset is belongs to the model)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name (one with inference: see --help of the model)")
    p.add_argument("ckpt", help="checkpoint: .safetensors/.pt/.npz, orbax dir, or a train dir")
    p.add_argument("--subset", "--difficulty", dest="subset", default="medium",
                   help="evaluation subset, as the model defines it (e.g. a difficulty)")
    p.add_argument("--index", type=int, default=0, help="instance j of the evaluation stream")
    p.add_argument("--config", default=None, help="config preset for files without metadata")


def main(args: argparse.Namespace) -> int:
    from twinframe import registry
    from twinframe.errors import TwinframeError
    from twinframe.parity.files import read_model_state

    spec = registry.get(args.model)
    if spec.infer is None:
        raise TwinframeError(f"model '{spec.name}' has no inference command")
    cfg, state, preset = read_model_state(spec, args.ckpt, args.config)
    print(spec.infer(cfg, spec.run_config(preset), state, args.subset, args.index))
    return 0
