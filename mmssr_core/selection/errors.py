"""The one error type of selection: bad input, named so a user can fix it."""

from __future__ import annotations


class SelectionInputError(ValueError):
    """A scores table, budget or option that selection cannot use; the message names the problem."""
