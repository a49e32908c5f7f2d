"""Ingestion: turn pools as users have them into the canonical raw pool, quarantining bad samples.

from mmssr_core.ingest import ingest_source, IngestResult, discover_sources
"""

from .errors import IngestError, Rejected
from .pipeline import IngestResult, discover_sources, find_pool_file, ingest_source

__all__ = ["IngestError", "IngestResult", "Rejected", "discover_sources", "find_pool_file", "ingest_source"]
