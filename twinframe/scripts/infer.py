"""`twinframe infer hrm CKPT --difficulty medium [--index J]`: solve one evaluation puzzle."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=["hrm"], help="model name")
    p.add_argument("ckpt", help="checkpoint: .safetensors/.pt/.npz, orbax dir, or a train dir")
    p.add_argument("--difficulty", default="medium",
                   choices=["very_easy", "easy", "medium", "hard", "extreme"])
    p.add_argument("--index", type=int, default=0, help="puzzle j of the evaluation stream")
    p.add_argument("--config", default=None, help="config preset for files without metadata")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from twinframe import registry
    from twinframe.parity.files import read_any, resolve_config
    from twinframe.tasks import sudoku
    from twinframe.training import checkpoint
    from twinframe.training.hrm import jax_model_from_state, solve_batch

    spec = registry.get(args.model)
    path = Path(args.ckpt)
    if path.is_dir() and not (path / "twinframe.json").exists():
        path = checkpoint.latest(path)
    if checkpoint.PATTERN.match(path.name) and (path.suffix == ".pt" or path.is_dir()):
        state = checkpoint.load(path)
        cfg = resolve_config(spec, state["config"], args.config)
        model = state["model"] if state["framework"] == "torch" else \
            spec.table(cfg).tree_to_torch(state["model"])
    else:
        kind, payload, meta = read_any(path)
        cfg = resolve_config(spec, meta.get("config"), args.config)
        model = payload if kind == "torch" else spec.table(cfg).tree_to_torch(payload)
    params, consts = jax_model_from_state(cfg, model)
    x, y = sudoku.eval_puzzle(cfg.eval_seed, sudoku.difficulty_index(args.difficulty),
                              args.index)
    out = solve_batch(cfg, params, consts, x[None])
    board, seg = out["boards"][0], int(out["segments"][0])
    blanks = x == 0
    n_ok = int(((board == y) & blanks).sum())
    print(f"puzzle ({args.difficulty} #{args.index}, {int((~blanks).sum())} clues):")
    print(sudoku.format_board(x))
    print(f"\nmodel answer ({seg} ACT segment(s) of max {cfg.halt_max_steps}, "
          f"q_halt {float(out['q_halt'][0]):+.3f}):")
    print(sudoku.format_board(board))
    verdict = "CORRECT" if bool(np.all(board == y)) else "WRONG"
    print(f"\n{verdict}: {n_ok}/{int(blanks.sum())} blank cells right")
    return 0
