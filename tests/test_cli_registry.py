"""The command registry: every listed module registers, a missing one is an error, and the
choice lists the parser offers are the library's own."""

from __future__ import annotations

import argparse

import pytest

from postcollapse import cli
from postcollapse._checks import ACTIVE_VAR_THRESHOLD
from postcollapse.diagnostics import BATCH_REDUCTIONS, KL_CONVENTIONS, RECON_CONVENTIONS
from postcollapse.theory import SIGMA_MODES


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    return action


def test_every_command_is_registered():
    commands = _subparsers(cli.build_parser())
    assert {"thresholds", "optimum", "sweep", "reproduce", "diagnose",
            "effective-beta"} <= set(commands)


def test_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES",
                        (*cli.COMMAND_MODULES, "postcollapse.cli.no_such_command"))
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()


def test_choices_come_from_the_library():
    commands = _subparsers(cli.build_parser())
    eb = commands["effective-beta"]
    assert tuple(_option(eb, "--recon").choices) == (*RECON_CONVENTIONS, "bce")  # bce: explained
    assert tuple(_option(eb, "--kl").choices) == KL_CONVENTIONS
    assert tuple(_option(eb, "--recon-batch").choices) == BATCH_REDUCTIONS
    assert tuple(_option(eb, "--kl-batch").choices) == BATCH_REDUCTIONS
    assert tuple(_option(commands["optimum"], "--sigma").choices) == SIGMA_MODES
    assert _option(commands["diagnose"], "--threshold").default == ACTIVE_VAR_THRESHOLD
