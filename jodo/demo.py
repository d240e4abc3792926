"""placeholder"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=int, default=100_000)


def run(args: argparse.Namespace) -> int:
    return 0
