"""The ``tokenbudget`` command: works on JSON run artifacts, with the plugin's own code.

Each subcommand is a pair of functions here: ``_add_<name>(subparsers)`` declares it and
``_cmd_<name>(args) -> int`` runs it. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .model import ArtifactError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenbudget", description="Render, compare and check pytest-tokenbudget run artifacts."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_show,):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ArtifactError as exc:
        print(f"tokenbudget: {exc}", file=sys.stderr)
        return 2


def _add_show(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("show", help="print the terminal summary of a run artifact")
    parser.add_argument("run", metavar="RUN.json")
    parser.add_argument("-v", "--verbose", action="store_true", help="every test, every issue")
    parser.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .artifact import load_run
    from .report.terminal import render

    run = load_run(Path(args.run))
    for line in render(run, verbose=args.verbose):
        print(line.text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
