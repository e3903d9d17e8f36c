"""The snakemake commands the docs give parse as they read: Snakemake's `--configfile` takes every
word after it up to the next option, so `--configfile config/config.yaml all_tables all` asks for
three config files and no target (it stops on a missing file 'all_tables'). Each command of the
README's code blocks and of the usage comments in config/, the Snakefile, the profiles and
scripts/ is parsed with Snakemake's own argument parser."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser

REPO = Path(__file__).resolve().parents[1]
COMMENTED = [REPO / "Snakefile", *sorted((REPO / "config").glob("*.yaml")),
             *sorted((REPO / "workflow" / "profiles").glob("*/config.yaml")), *sorted((REPO / "scripts").glob("*.sh"))]


def logical_lines(lines: list[str]) -> list[str]:
    """Lines with their backslash continuations joined."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return out


def readme_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [line for block in re.findall(r"^```(?:bash|sh)?\n(.*?)^```", text, flags=re.S | re.M)
            for line in logical_lines(block.splitlines())]


def comment_lines(path: Path) -> list[str]:
    # usage comments: "#   snakemake ..." and their "#       --config ..." continuations
    return logical_lines([line.lstrip("#") for line in path.read_text().splitlines() if line.startswith("#")])


def snakemake_commands() -> list[tuple[str, list[str]]]:
    found = []
    for where, lines in [("README.md", readme_lines())] + [(p.relative_to(REPO).as_posix(), comment_lines(p))
                                                          for p in COMMENTED]:
        for line in lines:
            if "snakemake " not in line or "<" in line:  # placeholders such as <the grid's config>
                continue
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word == "snakemake":
                    args = []
                    for w in words[i + 1:]:
                        if w in {"&&", "||", ";", "|"}:
                            break
                        args.append(w)
                    found.append((where, args))
    return found


COMMANDS = snakemake_commands()
parser = functools.cache(get_argument_parser)


def test_the_docs_give_commands_to_check():
    assert len(COMMANDS) >= 10, COMMANDS
    assert any(where == "README.md" and "--configfile" in args for where, args in COMMANDS)


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[f"{w}:{' '.join(a)[:60]}" for w, a in COMMANDS])
def test_command_parses_as_it_reads(where, args):
    parsed = parser().parse_args(args)
    for configfile in parsed.configfile or []:
        assert configfile.suffix == ".yaml", f"{where}: `snakemake {' '.join(args)}` reads {configfile} as a config file"
        assert (REPO / configfile).is_file(), f"{where}: {configfile} is not a file of the repository"
    for target in parsed.targets:
        assert not target.endswith(".yaml"), f"{where}: `snakemake {' '.join(args)}` takes {target} as a target"
