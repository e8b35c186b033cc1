"""The command line's contract: options per subcommand, help with defaults, one JSON object
on failure (never a traceback), eval refusing data it cannot evaluate."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams import cli
from streams.datasets import Dataset, DatasetError, check_evaluable
from streams.records import Click, ItemEvent


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subcommands(sub, f"{prefix}{name} ")
                found.update(nested or {f"{prefix}{name}": sub})
    return found


COMMANDS = _subcommands(cli.build_parser())


def test_every_command_is_listed():
    assert {"demo", "worker", "broker", "export", "eval", "train", "replay", "config", "send", "tail",
            "bench latency", "bench clickpath", "bench encoder", "bench freshness",
            "bench restart"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(name: str):
    parser = COMMANDS[name]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, f"{name} {action.option_strings} has no help"
        has_value = action.nargs != 0 and not action.required
        if has_value:
            assert "default" in (action.help or "") or action.default not in (None, argparse.SUPPRESS), (
                f"{name} {action.option_strings}: neither a default nor help that names it")
    if any(a.default not in (None, False, argparse.SUPPRESS) for a in parser._actions if a.option_strings):
        assert "(default:" in text


def test_subcommands_take_only_the_options_they_use():
    def options(name: str) -> set[str]:
        return {o for a in COMMANDS[name]._actions for o in a.option_strings}

    assert "--index-url" not in options("broker")
    assert "--bootstrap-servers" not in options("export")
    assert "--bootstrap-servers" not in options("eval")
    assert "--bootstrap-servers" in options("worker") and "--index-url" in options("worker")
    assert "--json" not in options("worker")  # it runs until stopped: nothing to report


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("recstream ")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=120)


def test_a_usage_error_with_json_is_one_json_object():
    result = _run("eval", "--k", "0", "--json")
    assert result.returncode == 2
    (line,) = result.stdout.strip().splitlines()
    assert "--k" in json.loads(line)["error"]


def test_a_failure_with_json_is_one_json_object_and_no_traceback(tmp_path: Path):
    result = _run("eval", "--items", str(tmp_path / "missing.jsonl"), "--clicks", str(tmp_path / "c.jsonl"),
                  "--json", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "missing.jsonl" in report["error"]
    assert "Traceback" not in result.stderr


def test_train_without_its_data_is_one_clear_line(tmp_path: Path):
    result = _run("train", "--items", str(tmp_path / "items.jsonl"), "--json", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "--items and --clicks go together" in json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert "Traceback" not in result.stderr


def test_an_unforeseen_error_names_itself_and_shows_the_traceback_only_under_v(monkeypatch, capsys):
    def broken(args: argparse.Namespace) -> None:
        raise KeyError("boom")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["config"].set_defaults(handler=broken)
    assert cli.main(["config", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1]) == {"error": "'boom'", "type": "KeyError"}
    assert "Traceback" not in out.err


def _dataset(items: list[str], clicks: list[tuple[str, str]]) -> Dataset:
    return Dataset(name="d", items=[ItemEvent(item_id=i, title=i) for i in items],
                   clicks=[Click(user_id=u, item_id=i, ts_s=float(n)) for n, (u, i) in enumerate(clicks)])


@pytest.mark.parametrize(("items", "clicks", "says"), [
    ([], [("u", "a")], "no items"),
    (["a", "b"], [], "no clicks"),
    (["a", "b"], [("u", "x"), ("u", "y")], "none of the 2 clicks"),
    (["a", "b"], [("u", "a"), ("v", "b")], "no user clicks twice"),
    (["a"], [("u", "a"), ("u", "a")], "one item"),
])
def test_eval_refuses_data_it_cannot_evaluate(items, clicks, says):
    with pytest.raises(DatasetError, match=says):
        check_evaluable(_dataset(items, clicks))


def test_eval_accepts_the_smallest_evaluable_data():
    check_evaluable(_dataset(["a", "b"], [("u", "a"), ("u", "b")]))


def test_two_workers_on_one_directory_are_refused_with_the_fix(tmp_path: Path):
    from streams.errors import ConfigError
    from streams.stages.app import lock_worker_dir

    held = lock_worker_dir(tmp_path / "workers" / "w0")
    try:
        with pytest.raises(ConfigError, match="own --name"):
            lock_worker_dir(tmp_path / "workers" / "w0")
        lock_worker_dir(tmp_path / "workers" / "w1").close()  # another name: its own directory
    finally:
        held.close()
    lock_worker_dir(tmp_path / "workers" / "w0").close()  # free again once the first is gone


def test_a_bootstrap_address_that_does_not_speak_kafka_is_one_line_soon(tmp_path: Path):
    """An address that accepts connections but never answers (an HTTP port, say) fails the
    worker's first contact in seconds with the likely cause, not after aiokafka's 40 s."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    try:
        result = _run("worker", "--bootstrap-servers", f"127.0.0.1:{server.getsockname()[1]}",
                      "--data-dir", str(tmp_path))
    finally:
        server.close()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    [line] = [l for l in result.stderr.splitlines() if "recstream worker: error:" in l]
    assert "Kafka listener" in line
