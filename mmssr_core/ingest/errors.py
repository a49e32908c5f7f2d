"""The two ways ingestion says no: a whole input is unusable, or one sample is rejected."""

from __future__ import annotations


class IngestError(ValueError):
    """The input as a whole cannot be ingested (missing, unreadable, undetectable format): a user error."""


class Rejected(Exception):
    """One sample is quarantined: `reason` is a code from `mmssr_core.schema.REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
