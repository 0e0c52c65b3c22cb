"""``erasablemask config show FILE [--set key.path=value | --set group=option ...]``."""

from __future__ import annotations

import argparse

from erasablemask.experiments.config.loading import dump_config, load_config


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The config file and dotted overrides, the same wherever a config is accepted."""
    parser.add_argument(
        "config",
        nargs=None if required else "?",
        help="YAML config file, or the name of one in experiments/configs (e.g. miniworld_demo)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one value, e.g. --set stage2.lambda_adv=100, or pick a config group's option, e.g. "
        "--set data=miniworld (repeatable; values parsed as YAML)",
    )


def _show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(dump_config(cfg), end="")
    groups = " ".join(f"{group}={option}" for group, option in cfg.groups.items())
    print(f"# config groups: {groups or '(none)'}")
    print(f"# config digest: {cfg.digest()} (compute and tracking not included)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("config", help="inspect configurations")
    sub = group.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved, validated config")
    add_config_arguments(show)
    show.set_defaults(handler=_show)
