"""`mmssr` subcommands the Dagster layer contributes, registered under the `mmssr.commands` entry points."""
