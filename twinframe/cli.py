"""`twinframe SUBCOMMAND ...`: argparse entry point; each subcommand is a thin module in scripts/.

A `TwinframeError` (bad file, bad config, unknown model) prints one line and exits with code 2;
any other exception prints one line and exits with code 1. `--debug` shows the traceback too.
Messages are escaped so that no text taken from a file reaches the terminal raw.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

SUBCOMMANDS = {
    "check": "parity checks of one model, printed as a table",
    "convert": "convert a checkpoint torch <-> JAX (direction from the file types)",
    "inspect": "show what a checkpoint file is (format, model, config, dtypes) without "
               "converting it",
    "report": "run every check and write report/index.html + report/report.json",
    "train": "train a model in one framework, with resumable checkpoints",
    "infer": "run a trained model on one task instance",
    "bench": "time torch eager vs JAX jit side by side",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinframe", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"twinframe.scripts.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from twinframe.errors import TwinframeError
    from twinframe.store.validate import one_line

    try:
        return int(args._main(args) or 0)
    except TwinframeError as e:
        _traceback(args)
        print(f"twinframe {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"twinframe {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug, still one line (--debug: the traceback)
        _traceback(args)
        hint = "" if args.debug else " (--debug shows the traceback)"
        print(f"twinframe {args.command}: internal error: {type(e).__name__}: "
              f"{one_line(str(e), 300)}{hint}", file=sys.stderr)
        return 1


def _traceback(args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
