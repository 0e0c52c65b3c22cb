"""README.md's "Command line" block and the CLI cannot drift apart (issue 19, item 6).

Every ``erasablemask ...`` line of the block names a command that exists, and
every ``--option`` on it is an option of that command; every command and
subcommand the CLI registers (whatever ``build_parser()`` holds when this runs)
appears in the block.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from erasablemask.platform.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_block() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Command line\n", 1)[1]
    block = section.split("```", 2)[1]
    lines: list[str] = []
    for line in block.splitlines():
        if line.startswith("erasablemask"):
            lines.append(line.strip())
        elif line.startswith(" ") and line.strip() and lines:  # an indented continuation of the command above
            code, _, comment = lines[-1].partition("#")
            lines[-1] = f"{code.rstrip()} {line.strip()}" + (f"  #{comment}" if comment else "")
    return lines


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _resolve(line: str, root: argparse.ArgumentParser) -> tuple[list[str], argparse.ArgumentParser]:
    """The command path a README line names and the parser of its last word."""
    words = line.split("#", 1)[0].split()[1:]
    path, parser = [], root
    for word in words:
        if word.startswith("--") and word in _options(parser) and not path:
            continue  # a global option such as --debug before the command
        sub = _subcommands(parser)
        if word not in sub:
            break
        path.append(word)
        parser = sub[word]
    return path, parser


def _all_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command path, e.g. ("fr", "verify")."""
    subs = _subcommands(parser)
    if not subs:
        return [prefix]
    return [path for name, sub in subs.items() for path in _all_commands(sub, (*prefix, name))]


def test_every_readme_command_and_option_exists() -> None:
    root = build_parser()
    lines = _command_block()
    assert len(lines) >= 8, lines
    problems = []
    for line in lines:
        path, parser = _resolve(line, root)
        if " COMMAND " in line.split("#", 1)[0]:  # the global options, before any command
            path, parser = ["COMMAND"], root
        elif not path or _subcommands(parser):
            problems.append(f"{line!r}: no such command (names {path or 'nothing'})")
            continue
        known = _options(parser) | _options(root)
        code = line.split("#", 1)[0]
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", code):
            if option not in known:
                problems.append(f"{line!r}: `erasablemask {' '.join(path)}` has no option {option}")
    assert not problems, "README.md 'Command line' disagrees with the CLI:\n" + "\n".join(problems)


def test_every_cli_command_is_in_the_readme() -> None:
    root = build_parser()
    documented = {tuple(_resolve(line, root)[0]) for line in _command_block()}
    missing = [" ".join(path) for path in _all_commands(root) if path not in documented]
    assert not missing, f"commands missing from README.md's 'Command line' block: {missing}"


def test_every_option_of_the_main_commands_is_in_the_readme() -> None:
    """The commands a new user starts with list all their (non-hidden) options."""
    root = build_parser()
    block = "\n".join(_command_block())
    for path in (("train",), ("fr", "verify"), ("fr", "calibrate"), ("data", "miniworld")):
        parser = root
        for word in path:
            parser = _subcommands(parser)[word]
        options = {
            s
            for a in parser._actions
            if a.help != argparse.SUPPRESS
            for s in a.option_strings
            if s.startswith("--") and s != "--help"
        }
        lines = [line for line in _command_block() if tuple(_resolve(line, root)[0]) == path]
        missing = sorted(o for o in options if not any(re.search(rf"{o}(?![\w-])", line) for line in lines))
        assert not missing, f"`erasablemask {' '.join(path)}` options missing from README.md: {missing}\n{block}"
