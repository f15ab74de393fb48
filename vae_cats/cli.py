"""What the command lines share: argparse types for bounded whole numbers, a help formatter
that shows defaults only where there is one, and the one way a command reports a bad input
(one line naming it, exit code 2). Imported by the entry points only; holds no logic another
front end needs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from vae_cats.checkpoint import CheckpointError
from vae_cats.faces import InputError


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its error
    return parse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``ArgumentDefaultsHelpFormatter`` without the ``(default: None)`` it appends to
    required options, which have no default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required:
            return action.help
        return super()._get_help_string(action)


def run_command(prog: str, call: Callable[[], int]) -> int:
    """``call()``'s exit code, or 2 after one line ``PROG: error: MESSAGE`` on stderr when it
    raises ``CheckpointError`` or ``InputError`` (a bad file or option, named by the message)."""
    try:
        return call()
    except (CheckpointError, InputError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
