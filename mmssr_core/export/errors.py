"""The one error export raises for a selection it cannot write."""


class ExportError(ValueError):
    """A selection that cannot be exported (unknown or ambiguous ids, bad option); names the problem."""
