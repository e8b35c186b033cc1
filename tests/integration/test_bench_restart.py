"""`recstream bench restart` end to end, small: cold start and restart both serve again.

A smoke run of the real benchmark on the session broker: user states written to the
changelog, a worker started on an empty data dir, stopped, started again on the same one.
It checks what each start recovered, never how long it took (targets are measured by
benchmarks, not by timed tests; docs/architecture.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.bench.restart import run_restart_bench, template_states
from streams.brokers import LocalBroker
from streams.interest import encode_state, seen_items
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_READ_FROM = re.compile(r"active offsets at start of reading:\n((?:[+|].*\n)+)")


def test_templates_are_real_users_of_several_clicks() -> None:
    states = template_states(300, count=5, clicks=12)
    assert len(states) == 5
    for state in states:
        assert 1 <= len(seen_items(state)) <= 12 and state.interests
        assert len(encode_state(state)) > 2 * 384 * 2  # a centroid and the session, 384-d float16


def test_restart_reads_only_what_the_cold_start_left(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", state={"store": "rocksdb"}, index={"kind": "edge"})
    keep = tmp_path / "bench"

    report = run_restart_bench(settings, users=600, items=300, bootstrap_servers=kafka_broker.bootstrap_servers,
                               progress=False, keep_dir=keep)

    assert (report["users"], report["state_store"]) == (600, "rocksdb") and report["state_mb"] > 0
    assert 2 * 384 * 2 < report["state_bytes_per_user"] < 5 * 384 * 4  # float16 vectors
    for start in ("cold_start", "restart"):
        assert report[start]["seconds"] > 0 and report[start]["index_catch_up_s"] is not None
    # The cold start read every item vector; the restart resumed from the replica's snapshot.
    assert (report["cold_start"]["index_resumed"], report["restart"]["index_resumed"]) == (False, True)
    assert report["met"] == (report["restart"]["seconds"] <= report["target_s"])
    # after a SIGKILL the worker serves again once the dead member's session has timed out
    assert report["after_crash"]["seconds"] > 0 and report["after_crash"]["index_resumed"]
    # faust logs where its changelog reading starts: from nothing (-1) on the cold start, from
    # the offsets RocksDB kept on the restart and after the crash.
    log = (keep / "worker.log").read_text()
    starts = _READ_FROM.findall(log)
    assert len(starts) == 3
    cold_offsets = re.findall(r"\|\s*(-?\d+)\s*\|\s*$", starts[0], re.M)
    assert cold_offsets and set(cold_offsets) == {"-1"}
    for warm in starts[1:]:
        warm_offsets = re.findall(r"\|\s*(-?\d+)\s*\|\s*$", warm, re.M)
        assert warm_offsets and all(int(o) >= 0 for o in warm_offsets)
