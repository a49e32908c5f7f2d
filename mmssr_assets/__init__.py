"""The Dagster layer of mmssr: assets, checks, jobs, sensors and schedules over `mmssr_core`."""

from mmssr_assets.known_warnings import install as _install_warning_filters

_install_warning_filters()
