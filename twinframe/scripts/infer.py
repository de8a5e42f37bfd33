"""`twinframe infer`: not implemented yet."""

from __future__ import annotations

import argparse

from twinframe.errors import TwinframeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="hrm")


def main(args: argparse.Namespace) -> int:
    raise TwinframeError("infer is not implemented yet")
