"""What the commands of `python -m allegro_ref` share: a parser whose usage errors are one line
(exit status 2), argument types that check their range, and a runner that turns a failed run
into one line (exit status 1) unless `--debug` asks for the traceback."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "ArgumentParser",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "one_line",
    "run_reporting_errors",
]


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose usage errors are one line on standard error (the
    program, the message, where to look) with exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---------------------------------------------------------------------------------------------
# Argument types: each checks one range and says what it expected
# ---------------------------------------------------------------------------------------------
def _number(text: str, kind: Callable, minimum: float, inclusive: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    in_range = value >= minimum if inclusive else value > minimum
    if not (math.isfinite(value) and in_range):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _number(text, int, 1, True, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _number(text, int, 0, True, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, float, 0.0, False, "a finite number > 0")


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _number(text, float, 0.0, True, "a finite number >= 0")


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (whitespace runs, newlines included, become a space)."""
    return " ".join(str(error).split()) or type(error).__name__


def run_reporting_errors(
    run: Callable[..., int], *args: Any, prog: str, debug: bool = False
) -> int:
    """`run(*args)`; an exception becomes one line on standard error and exit status 1
    (130 for Ctrl-C), unless `debug` asks for the traceback."""
    try:
        return run(*args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the command line's last resort, by design
        if debug:
            raise
        print(f"{prog}: error: {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1
