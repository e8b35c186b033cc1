"""The Kafka side of recstream: records, settings, broker harness, workers, ranking, CLI."""
