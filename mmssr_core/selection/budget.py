"""Budgets: how many samples a selection takes, written as a fraction, a percentage or a count.

One parser for every entry point (the CLI, recipes, the Python API), in two steps: `parse_budget` checks
the syntax and says what kind of budget it is; `Budget.size(pool_size)` turns it into a sample count.
The syntax is deliberately narrow (digits, one optional decimal point, one optional `%`) because the
budget as typed names the output file: `1e1`, `1_0` or `+5` would be numbers to Python but odd names.

Fractions are floored in decimal arithmetic: 0.29 of 100 is 29 (binary floating point gives 28).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal

from mmssr_core.selection.errors import SelectionInputError

SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)?%?")
HELP = "write a fraction (0.05), a percentage (5%) or a whole count (5000)"


@dataclass(frozen=True)
class Budget:
    """A parsed budget: exactly one of `fraction` (0 < r < 1) and `count` (>= 1) is set.

    `key` is the budget as typed (strings) or the plain decimal form of a number; it keys results and
    names files.
    """

    key: str
    fraction: Decimal | None = None
    count: int | None = None

    @property
    def value(self) -> float | int:
        """The budget as a plain number: a float fraction or an int count (what recipes store)."""
        return self.count if self.count is not None else float(self.fraction)

    def size(self, pool_size: int) -> int:
        """The number of samples: the count, or floor(fraction x pool_size); never 0."""
        if self.count is not None:
            return self.count
        n = int((self.fraction * pool_size).to_integral_value(rounding="ROUND_FLOOR"))
        if n == 0:
            raise SelectionInputError(f"budget {self.key!r} selects 0 of {pool_size} samples")
        return n


def parse_budget(value: str | int | float | Budget) -> Budget:
    """Parse a budget; raises SelectionInputError naming the value and the accepted forms.

    Strings: `0.05` (a fraction below 1), `5%` (a percentage above 0 and below 100), `5000` (a count; `5000.0`
    is the same count). Rejected: signs, exponents, underscores, spaces, `nan`, zero, `100%` and above,
    non-integral counts. Numbers from Python or a recipe file follow the same rules.
    """
    if isinstance(value, Budget):
        return value
    if isinstance(value, bool):
        raise SelectionInputError(f"budget {value!r} is not a number: {HELP}")
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, numbers.Integral):
        return _from_number(str(int(value)), Decimal(int(value)))
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise SelectionInputError(f"budget {value!r} is not a finite number: {HELP}")
        number = Decimal(repr(f))
        return _from_number(format(number, "f"), number)
    raise SelectionInputError(f"budget {value!r} is not a number: {HELP}")


def budget_key(value: str | int | float | Budget) -> str:
    """The key of a budget in results and file names (the budget as typed when a string)."""
    return parse_budget(value).key


def _parse_text(text: str) -> Budget:
    if not SYNTAX.fullmatch(text):
        raise SelectionInputError(
            f"budget {text!r} is not a budget: {HELP}; signs, exponents, underscores and spaces are not accepted"
        )
    if text.endswith("%"):
        share = Decimal(text[:-1]) / 100
        if not 0 < share < 1:
            raise SelectionInputError(f"budget {text!r}: a percentage must be above 0% and below 100%")
        return Budget(text, fraction=share)
    return _from_number(text, Decimal(text))


def _from_number(key: str, number: Decimal) -> Budget:
    if number <= 0:
        raise SelectionInputError(f"budget {key!r} must be positive: {HELP}")
    if number < 1:
        return Budget(key, fraction=number)
    if number != number.to_integral_value():
        raise SelectionInputError(f"budget {key!r} is neither a fraction (0 < r < 1) nor a whole count of samples")
    return Budget(key, count=int(number))
