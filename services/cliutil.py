"""Argument parsing that reports problems as one readable line (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse that prints ``prog: error: message`` on one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    """Print one error line for ``prog`` and exit."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(code)


def parse_speed(text: str) -> float:
    """'60x' or '60' -> 60.0 (replay pacing multiple of real time; 0 = as fast as possible)."""
    raw = text.lower().removesuffix("x")
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid speed {text!r}: use e.g. 60x, 1x or 0 (unpaced)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid speed {text!r}: must be >= 0")
    return value
