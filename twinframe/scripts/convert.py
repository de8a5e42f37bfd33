"""`twinframe convert SRC DST`: torch (.safetensors/.pt) <-> JAX (orbax dir/.npz)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="source checkpoint (.safetensors, .pt, .npz or orbax directory)")
    p.add_argument("dst", help="destination; its type picks the direction")
    p.add_argument("--model", default=None, help="model name if the file carries none")
    p.add_argument("--config", default=None, help="config preset for files without metadata")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="tensor dtype of torch outputs (default float32)")


def main(args: argparse.Namespace) -> int:
    from twinframe.parity.files import convert_file

    s = convert_file(args.src, args.dst, args.model, args.config, args.dtype)
    print(f"{args.src} -> {args.dst}: {s['model']}, {s['tensors']} tensors, "
          f"{s['from']} -> {s['to']}")
    return 0
