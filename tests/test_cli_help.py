"""The CLI documents itself: every option says what it does and its default; every command
ends its help with examples that parse."""

import argparse
import shlex

import pytest

from postcollapse import cli


def _commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


_PARSER, _COMMANDS = _commands()


def _documented(action) -> bool:
    """Flags (store_true), required options and positionals need no default in their help."""
    return (
        isinstance(action, argparse._HelpAction | argparse._StoreTrueAction)
        or not action.option_strings
        or action.required
    )


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_option_has_help_with_its_default(name):
    undocumented = [
        a.option_strings[0]
        for a in _COMMANDS[name]._actions
        if not _documented(a) and (not a.help or "default" not in a.help.lower())
    ]
    assert undocumented == [], f"{name}: options without help or stated default"


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_positional_and_flag_has_help(name):
    missing = [a.dest for a in _COMMANDS[name]._actions if not a.help]
    assert missing == []


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_help_ends_with_examples_that_parse(name):
    sp = _COMMANDS[name]
    assert sp.epilog and "examples:" in sp.epilog.lower()
    examples = [
        line.strip() for line in sp.epilog.splitlines()
        if line.strip().startswith(f"postcollapse {name}")
    ]
    assert len(examples) >= 2, f"{name}: fewer than two examples"
    for ex in examples:
        argv = shlex.split(ex.split("  #")[0])[1:]
        args = _PARSER.parse_args(argv)  # argparse exits (SystemExit) on a bad example
        assert args.command == name


def test_examples_keep_their_layout(capsys):
    """The epilog is printed as written (RawDescriptionHelpFormatter), not re-wrapped."""
    with pytest.raises(SystemExit):
        _PARSER.parse_args(["thresholds", "--help"])
    out = capsys.readouterr().out
    assert "\n  postcollapse thresholds" in out
