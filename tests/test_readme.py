"""The README keeps its promises: its two commands, and only commands and files that exist."""

import re

from conftest import REPO

README = (REPO / "README.md").read_text()


def test_exactly_the_two_newcomer_commands():
    first = "scripts/setup.sh && .venv/bin/emotrack replay examples/heldout_mix.ogg --out results.jsonl"
    second = "scripts/setup.sh --test && .venv/bin/python -m pytest"
    setup_lines = [ln.strip() for ln in README.splitlines() if "scripts/setup.sh" in ln and ln.startswith("    ")]
    assert setup_lines == [first, second]
    assert README.index(first) < README.index("## Using it")
    assert (REPO / "scripts" / "setup.sh").stat().st_mode & 0o111
    assert (REPO / "examples" / "heldout_mix.ogg").is_file()


def test_every_subcommand_shown_exists():
    from streamer.cli import COMMANDS, build_parser

    shown = set(re.findall(r"^ {4,}(?:.*&& )?(?:\.venv/bin/)?emotrack (\w+)", README, re.M))
    assert {"replay", "stream", "predict", "separate", "features", "view", "record", "report"} <= shown
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert shown <= set(sub.choices) and shown <= set(COMMANDS), shown - set(sub.choices)


def test_links_and_images_point_at_files():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert (REPO / target).exists(), target
    docs = REPO / "docs" / "MESSAGES.md"
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", docs.read_text()):
        assert (docs.parent / target).exists(), target
