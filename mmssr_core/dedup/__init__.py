"""Duplicate removal before selection: exact copies (content hash) and near copies (normalised-text
MinHash with LSH banding, plus the perceptual hash of each image computed at ingest).

    from mmssr_core.dedup import DedupConfig, find_duplicates, pool_batches
    result = find_duplicates(lambda: pool_batches(store, sources), DedupConfig())
"""

from mmssr_core.dedup.config import DedupConfig, DedupConfigError, dedup_config
from mmssr_core.dedup.groups import DedupResult, find_duplicates
from mmssr_core.dedup.pool import pool_batches

__all__ = ["DedupConfig", "DedupConfigError", "DedupResult", "dedup_config", "find_duplicates", "pool_batches"]
