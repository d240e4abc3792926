"""The `jodo` command line: one entry point for every operation."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jodo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a synthetic fleet end to end (not yet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        print("jodo demo: not yet — the actor runtime and front door land in later issues.")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
