"""The Dagster layer of mmssr: assets, checks, jobs, sensors and schedules over `mmssr_core`.

Importing this package imports nothing of Dagster (`mmssr --help` lists the `materialize` command it
contributes without loading Dagster); the modules that define assets install the known-warning filters
through `mmssr_assets.partitions`, which every one of them imports first.
"""
