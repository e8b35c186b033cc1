"""``python -m export --model NAME|PATH --out DIR [--fp16] [--int8] [--json]``.

A thin CLI over :func:`export.export_model` (the same function ``recstream export``
calls). Progress goes to stderr; with ``--json`` the report is the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from encoders.errors import RecstreamError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="a packaged encoder by name (all-MiniLM-L6-v2, m3e-small) or a local Hugging Face "
                             "encoder directory (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, required=True, help="output model directory")
    parser.add_argument("--fp16", action="store_true", help="also write an fp16 variant (CUDA EP)")
    parser.add_argument("--int8", action="store_true", help="also write a dynamic int8 variant if it passes parity")
    parser.add_argument("--keep", help="comma-separated variants whose files stay (default: all)")
    parser.add_argument("--int8-min-cosine", type=float, help="the int8 variant's parity bar (default 0.99)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line last")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.exporter import export_model, model_source

    def progress(message: str) -> None:
        print(f"[export] {message}", file=sys.stderr, flush=True)

    try:
        model, name = model_source(args.model)
        report = export_model(model, args.out, fp16=args.fp16, int8=args.int8, model_name=name, progress=progress,
                             keep=args.keep.split(",") if args.keep else None, int8_min_cosine=args.int8_min_cosine)
    except RecstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        for name, variant in report["variants"].items():
            print(f"{name:5s} {variant['file']:18s} min_cosine={variant['min_cosine']} "
                  f"max_abs_diff={variant['max_abs_diff']} ({variant['status']})")
        for rejected in report["rejected"]:
            print(f"refused {rejected['variant']}: min_cosine={rejected['min_cosine']}")
        print(f"{report['version']} -> {report['out_dir']} ({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
