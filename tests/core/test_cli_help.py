"""Every command-line tool's `--help`: each option says what it does and what leaving it out gives."""

import argparse

import pytest

from thinkdiff_core import convert, generate
from thinkdiff_core.cli import ShowsDefaults
from train import align, demo, evaluate, precompute
from train.cobsat import harness

PARSERS = {"generate": generate.build_parser, "convert": convert.build_parser, "cobsat": harness.build_parser,
           "demo": demo.build_parser, "align": align.build_parser, "precompute": precompute.build_parser,
           "evaluate": evaluate.build_parser}


def parsers_within(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and its subcommands' (convert aligner, convert vision)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [p for sub in action.choices.values() for p in parsers_within(sub)]
    return found


def option_help(parser: argparse.ArgumentParser, option: str) -> str:
    """One option's lines as `--help` prints them, joined into one."""
    formatter = parser.formatter_class(parser.prog)
    formatter.add_argument(next(a for a in parser._actions if option in a.option_strings))
    return " ".join(formatter.format_help().split())


@pytest.mark.parametrize("tool", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(tool):
    for parser in parsers_within(PARSERS[tool]()):
        assert parser.formatter_class is ShowsDefaults, parser.prog
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            assert action.help and action.help.strip(), f"{parser.prog} {name} has no help"
            if action.option_strings and action.default not in (None, False, [], "", argparse.SUPPRESS):
                assert "default" in option_help(parser, name), f"{parser.prog} {name}: its default is not shown"


def test_the_formatter_shows_a_default_once_and_only_a_real_one():
    parser = argparse.ArgumentParser(prog="tool", formatter_class=ShowsDefaults)
    parser.add_argument("--steps", type=int, default=28, help="sampler steps")
    parser.add_argument("--seed", type=int, default=0, help="the seed")
    parser.add_argument("--shots", nargs="+", type=int, default=[2, 4], help="examples")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the model's own)")
    parser.add_argument("--ratio", default="50%", help="how much (default: half, 50%%)")
    parser.add_argument("--tiny", action="store_true", help="tiny models")
    assert option_help(parser, "--steps").endswith("sampler steps (default: 28)")
    assert option_help(parser, "--seed").endswith("the seed (default: 0)")  # 0 is a value, not "none"
    assert option_help(parser, "--shots").endswith("examples (default: 2 4)")
    assert option_help(parser, "--size").endswith("image size (default: the model's own)")
    assert option_help(parser, "--ratio").endswith("how much (default: half, 50%)")
    assert option_help(parser, "--tiny").endswith("tiny models")
