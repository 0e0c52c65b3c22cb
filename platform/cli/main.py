"""The ``erasablemask`` command line.

Each command group lives in its own module ``platform/cli/<group>.py``
exposing ``register(subparsers)``; this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command-group modules, in the order `--help` lists them.
COMMAND_GROUPS = ("config", "data", "fr", "train", "demo", "analysis")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erasablemask",
        description="ErasableMask: robust, erasable facial privacy protection (reproduction platform).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        module = importlib.import_module(f"erasablemask.platform.cli.{group}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, LookupError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"erasablemask {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
