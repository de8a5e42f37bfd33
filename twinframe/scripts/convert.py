"""`twinframe convert SRC DST`: torch (.safetensors/.pt/.pth) <-> JAX (orbax dir/.npz)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="source checkpoint (.safetensors, .pt, .pth, .npz or orbax "
                   "directory); never modified")
    p.add_argument("dst", help="destination (must not exist); its type picks the direction")
    p.add_argument("--model", default=None,
                   help="model name (default: from the file's metadata or its keys and shapes)")
    p.add_argument("--config", default=None,
                   help="config preset (default: from the file); only architecture fields must "
                   "agree with the file")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="float dtype of torch outputs (default: each tensor's source dtype)")
    p.add_argument("--layout", default=None, choices=["twinframe", "reference"],
                   help="torch outputs: 'reference' = the tensors alone as the model's public "
                   "code saves them, 'twinframe' = with twinframe's metadata (default: the "
                   "source's layout)")
    p.add_argument("--optimizer", default=None, metavar="FILE",
                   help="a torch optimizer state_dict file: read next to a torch SRC into the "
                   "JAX checkpoint, or written from a JAX SRC")
    p.add_argument("--force", action="store_true",
                   help="replace an existing DST, only if twinframe wrote it")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert weights holding NaN/Inf (refused by default)")
    p.add_argument("--format", default="auto", choices=["auto", "nnx"],
                   help="'nnx': write DST as a Flax NNX checkpoint directory (an NNX SRC is "
                   "recognised by itself)")


def main(args: argparse.Namespace) -> int:
    from twinframe.parity.files import convert_file
    from twinframe.store.validate import q, show

    if args.format == "nnx" or _is_nnx(args.src):
        return _nnx(args)
    s = convert_file(args.src, args.dst, args.model, args.config, args.dtype, force=args.force,
                     allow_nonfinite=args.allow_nonfinite, layout=args.layout,
                     optimizer=args.optimizer)
    extra = f", optimizer -> {show(s['optimizer'])}" if s.get("optimizer") and \
        s["to"] == "torch" else (", with optimizer" if s.get("optimizer") else "")
    print(f"{show(args.src)} -> {show(args.dst)}: {s['model']} ({s['config']}, {s['how']}), "
          f"{s['tensors']} tensors, {s['dtype']}, {s['from']} -> {s['to']}, "
          f"{s['layout']} layout{extra}")
    if s.get("optimizer_skipped"):
        print("note: the source holds optimizer state; pass --optimizer FILE to write it")
    if s.get("wrapped"):
        print(f"note: read the weights under 'model_state_dict'; the file's other entries "
              f"({', '.join(q(k, 40) for k in s['wrapped'][:5])}) are not converted")
    if s.get("ignored"):
        print(f"note: {len(s['ignored'])} keys of parts the model excludes were left out "
              f"({', '.join(q(k, 80) for k in s['ignored'][:2])}, ...)")
    if s.get("filled"):
        print(f"note: {len(s['filled'])} keys the reference code does not save were filled "
              f"with their initial values ({', '.join(s['filled'][:2])}, ...); the reference "
              "layout leaves them out again")
    return 0


def _is_nnx(src: str) -> bool:
    """A Flax NNX checkpoint directory (its twinframe.json read with the validated reader)."""
    from pathlib import Path

    from twinframe.errors import CheckpointError
    from twinframe.store import validate

    meta = Path(src) / "twinframe.json"
    if validate.kind(src) != "directory" or validate.kind(meta) != "file":
        return False
    try:
        fmt = validate.loads_object(validate.read_small(meta), meta).get("format", "")
    except CheckpointError:
        return False
    return isinstance(fmt, str) and fmt.endswith("/nnx/1")


def _nnx(args: argparse.Namespace) -> int:
    """Flax NNX checkpoints (`twinframe.flax.checkpoint.convert_nnx`) behind the same
    destination policy as every other output."""
    from pathlib import Path

    from twinframe.flax.checkpoint import convert_nnx
    from twinframe.store import dest
    from twinframe.store.validate import show

    to_nnx = args.format == "nnx"
    out_is_dir = to_nnx or Path(args.dst).suffix not in (".safetensors", ".pt", ".pth", ".npz")
    dest.check_destination(args.dst, [args.src], args.force, out_is_dir=out_is_dir)
    s = convert_nnx(args.src, args.dst, args.model, args.config, args.dtype, to_nnx=to_nnx,
                    force=args.force, allow_nonfinite=args.allow_nonfinite, layout=args.layout,
                    optimizer=args.optimizer)
    print(f"{show(args.src)} -> {show(Path(args.dst))}: {s['model']}, {s['tensors']} tensors, "
          f"{s['from']} -> {s['to']}")
    return 0
