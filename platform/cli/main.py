"""The ``erasablemask`` command line.

Each command group lives in its own module ``platform/cli/<group>.py``
exposing ``register(subparsers)``; this file only assembles them and turns
expected failures into one line.

An expected failure (bad input or an unusable machine: :class:`UserError`,
``ValueError``, ``LookupError``, a missing/unreadable file, unavailable FR
weights, an unreachable tracking server) prints ``erasablemask COMMAND:
error: MESSAGE`` — the message names the input and the fix — and exits 2;
Ctrl-C prints one line and exits 130; a closed pipe (``config show X | head
-1``) ends quietly. Anything else is a bug and keeps its traceback, as does
every error under ``erasablemask --debug COMMAND ...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from erasablemask.experiments.errors import UserError

# Command-group modules, in the order `--help` lists them.
COMMAND_GROUPS = ("config", "data", "fr", "train", "evaluate", "compare", "sweep", "demo", "analysis", "photos",
                  "claims")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erasablemask",
        description="ErasableMask: robust, erasable facial privacy protection (reproduction platform).",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line (before the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        module = importlib.import_module(f"erasablemask.platform.cli.{group}")
        module.register(sub)
    return parser


def _expected(exc: BaseException) -> bool:
    """True for failures caused by the input or the machine (see the module docstring), False for bugs."""
    from erasablemask.models.fr.spec import WeightsUnavailable

    if isinstance(exc, BrokenPipeError):
        return False
    if isinstance(exc, OSError):  # a file or a connection named by the error
        return exc.filename is not None or isinstance(exc, (FileNotFoundError, PermissionError, ConnectionError))
    return isinstance(exc, (UserError, ValueError, LookupError, WeightsUnavailable))


def error_line(command: str, exc: BaseException) -> str:
    """``erasablemask COMMAND: error: MESSAGE`` for an expected failure.

    Lower layers speak Python (``weights=PATH``); on the command line the same fix is ``--weights FILE``.
    """
    msg = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if "weights=PATH" in msg:
        msg = msg.replace("pass weights=PATH", "pass --weights FILE (weights=PATH in Python)")
    return f"erasablemask {command}: error: {msg}"


def check_shared_options(args: argparse.Namespace) -> None:
    """Options several commands share, checked by name before any work: ``--threads`` and ``--device``.

    Raises:
        UserError: naming the option, the value and what is allowed.
    """
    threads = getattr(args, "threads", None)
    if isinstance(threads, int) and not isinstance(threads, bool) and threads < 0:
        raise UserError(f"--threads {threads}: give a number of CPU threads >= 1 (or 0 for torch's default)")
    device = getattr(args, "device", None)
    if isinstance(device, str):
        from erasablemask.platform.cli.args import device as check_device

        try:
            args.device = check_device(device)
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"--device {device}: {exc}") from None


def _quiet_broken_pipe() -> int:
    """The reader went away (``| head``): stop writing, without a traceback (exit 141, as for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout at exit again: let that go nowhere
    except (OSError, ValueError):
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for bad input, 130 for Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_shared_options(args)
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"erasablemask {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or not _expected(exc):
            raise
        print(error_line(args.command, exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
