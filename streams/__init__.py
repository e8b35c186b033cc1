"""The Kafka side of recstream: records, settings, broker harness, workers, ranking, CLI."""

from functools import cache


@cache
def version() -> str:
    """recstream's installed version ("unknown" when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("recstream")
    except PackageNotFoundError:
        return "unknown"
