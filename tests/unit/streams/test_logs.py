"""Secrets never reach a log line, at any level; a fault repeated thousands of times is one
line and a count."""

from __future__ import annotations

import io
import logging

from streams.logs import RateLimit, RedactSecrets


def _logger(*filters: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    for f in filters:
        handler.addFilter(f)
    logger = logging.getLogger(f"test-logs-{id(out)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_a_password_in_a_client_librarys_debug_line_is_redacted():
    redact = RedactSecrets()
    redact.add("s3cr3t-pässword")
    logger, out = _logger(redact)
    # aiokafka's debug line of the SASL/PLAIN authenticate request: the bytes, repr()'d
    logger.debug("Sending request %s", {"auth_bytes": b"\x00alice\x00" + "s3cr3t-pässword".encode()})
    logger.info("plain %s", "s3cr3t-pässword")
    try:
        raise ValueError("login failed for s3cr3t-pässword")
    except ValueError:
        logger.exception("boom")
    text = out.getvalue()
    assert "s3cr3t" not in text and "p\\xc3" not in text
    assert text.count("***") >= 3 and "alice" in text


def test_a_repeated_fault_is_one_line_then_a_count(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("streams.logs.time.monotonic", lambda: clock[0])
    logger, out = _logger(RateLimit(window_s=10.0))
    logger.name = "aiokafka.conn"
    for n in range(5000):
        logger.error("Unable connect to %r: %s", "127.0.0.1:9092", f"attempt {n}")
    logger.warning("another kind")
    clock[0] += 11.0
    logger.error("Unable connect to %r: %s", "127.0.0.1:9092", "attempt 5000")
    logger.info("info is never limited")
    logger.info("info is never limited")
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["Unable connect to '127.0.0.1:9092': attempt 0", "another kind"]
    assert lines[2].startswith("Unable connect to '127.0.0.1:9092': attempt 5000 [and 4999 more like it")
    assert lines[3:] == ["info is never limited"] * 2


def test_retriable_client_errors_are_quiet_at_start_only(monkeypatch):
    from streams.logs import StartupRetries

    clock = [0.0]
    monkeypatch.setattr("streams.logs.time.monotonic", lambda: clock[0])
    logger, out = _logger(StartupRetries(grace_s=60.0))
    logger.name = "aiokafka.consumer.fetcher"
    logger.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: tp")
    logger.error("Unable connect to node 1: refused")  # not a start-up retry: kept
    clock[0] = 61.0
    logger.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: tp")  # later: kept
    assert out.getvalue().splitlines() == ["Unable connect to node 1: refused",
                                           "Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: tp"]
