"""mmssr core: schema, ingestion, prompts, scoring, selection and reports for mmSSR.

This package never imports Dagster; `mmssr_assets` wraps it into an asset graph.
"""

__version__ = "0.1.0"
