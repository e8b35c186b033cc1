"""Logging for every recstream process: levels, secrets kept out, repeated faults summarised.

- Libraries' start-up chatter (faust, aiokafka, onnxruntime) stays below WARNING unless
  ``-v``: a normal start is a few lines, and the worker's own "ready" line says what matters.
- :class:`RedactSecrets`: aiokafka's debug log prints the SASL authenticate request, password
  included, and a library may put a secret in an error message. Every record passes this
  filter on its way to a handler, at every level, so no secret the settings hold is written.
- :class:`RateLimit`: a broker outage makes aiokafka log the same connection error thousands
  of times a second. The first of each kind is written; repeats within ``window_s`` are
  counted and the count is written with the next one after the window.

The standard library has no filter for either; both are a few lines over ``logging.Filter``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

#: Loggers of libraries that speak at INFO (and some at ERROR) about a normal start.
_CHATTY = ("faust", "mode", "aiokafka", "kafka", "httpx", "urllib3", "filelock", "huggingface_hub",
           "onnxruntime")


class RedactSecrets(logging.Filter):
    """Replaces every registered secret in a record's message (and its traceback) with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret:
            # as written, and as it appears inside a repr()'d str or UTF-8 bytes
            self.secrets.update({secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]})

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(secret in text for secret in self.secrets):
                record.msg = f"{record.msg}\n{self._clean(text)}"
                record.exc_info, record.exc_text = None, None
        return True


class RateLimit(logging.Filter):
    """Writes the first WARNING-or-worse record of each kind (logger, level, message template)
    and drops its repeats for ``window_s``; the next one written says how many were dropped."""

    def __init__(self, window_s: float = 10.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._kinds: dict[tuple[str, int, Any], tuple[float, int]] = {}  # kind -> (last written, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # A library's fault repeats with varying details: its template is the kind. recstream's
        # own lines differ by what they name (the first dead letter of each reason): the text is.
        ours = record.name.startswith(("streams", "recstream", "encoders", "export"))
        kind = (record.name, record.levelno, record.getMessage() if ours else str(record.msg))
        now = time.monotonic()
        last, dropped = self._kinds.get(kind, (-float("inf"), 0))
        if now - last < self.window_s:
            self._kinds[kind] = (last, dropped + 1)
            return False
        self._kinds[kind] = (now, 0)
        if len(self._kinds) > 10_000:  # messages that never repeat must not grow this for ever
            self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.window_s}
        if dropped:
            record.msg, record.args = f"{record.getMessage()} [and {dropped} more like it in the last " \
                                      f"{now - last:.0f} s]", None
        return True


#: Errors aiokafka retries by itself while new topics elect leaders and a group finds its
#: coordinator: expected in the first moments of a process, worth a line only later.
_RETRIABLE = ("NotLeaderForPartition", "LeaderNotAvailable", "GroupCoordinatorNotAvailable", "NotCoordinator",
              "UnknownTopicOrPartition")


class StartupRetries(logging.Filter):
    """Drops client-library records of retriable errors in the first ``grace_s`` of the process
    (under ``-v`` they are kept: the filter is not installed)."""

    def __init__(self, grace_s: float = 60.0) -> None:
        super().__init__()
        self.until = time.monotonic() + grace_s

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiokafka") and time.monotonic() < self.until:
            return not any(name in record.getMessage() for name in _RETRIABLE)
        return True


class LastLibraryError(logging.Filter):
    """Remembers the last ERROR a client library logged: aiokafka logs why it could not connect
    (refused, authentication failed) and then raises an error that says only that it could not."""

    def __init__(self) -> None:
        super().__init__()
        self.message: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith(("aiokafka", "kafka")):
            self.message = record.getMessage()
        return True


#: The last client-library error of the process (for the one line a failed command prints).
LAST_LIBRARY_ERROR = LastLibraryError()

#: The one redaction filter of the process: secrets are added as settings are built.
REDACT = RedactSecrets()


def protect(*secrets: str | None) -> None:
    """Keep these values out of every log record from now on."""
    for secret in secrets:
        REDACT.add(secret)


def configure(verbose: bool) -> None:
    """Root logging to stderr, with the redaction and rate-limit filters on its handler."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(REDACT)
        handler.addFilter(LAST_LIBRARY_ERROR)  # after redaction: what it keeps is printed again
        handler.addFilter(RateLimit())
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(StartupRetries())
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
        # ... except a table's recovery from its changelog: long work, whose progress (and the
        # offsets it starts from) an operator waiting for a worker wants to see.
        logging.getLogger("faust.tables.recovery").setLevel(logging.INFO)
        # aiokafka logs a retried metadata or coordinator error at ERROR while a fresh
        # topic's leader is elected: normal on a start, so only shown under -v.
        logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
        logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
        # faust's services log "Starting..."/"Stopping..." under the module that defines their
        # class: recstream's App and transport subclasses. recstream logs only warnings there.
        for name in ("streams.stages.context", "streams.transport"):
            logging.getLogger(name).setLevel(logging.WARNING)
