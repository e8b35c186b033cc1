"""One progress display for the tools' long work (eval's replay, encoding, training)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class progress_bar:  # noqa: N801 - used as a context manager like a function
    """A rich progress bar on stderr with running figures beside it; a no-op when disabled.

    ``with progress_bar(True, total, "eval ml-100k", "ndcg") as advance:`` then
    ``advance(done, {"recstream": 0.1, ...})``.
    """

    def __init__(self, enabled: bool, total: int, label: str, figures: str = "") -> None:
        self.enabled, self.total, self.label, self.figures = enabled, total, label, figures
        self._progress: Any = None

    def __enter__(self) -> Callable[[int, dict[str, float]], None]:
        if not self.enabled:
            return lambda done, running: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[running]}"),
            console=Console(stderr=True), transient=False,
        )
        self._progress.start()
        task = self._progress.add_task(self.label, total=self.total, label=self.label, running="")
        prefix = f"{self.figures}: " if self.figures else ""

        def advance(done: int, running: dict[str, float]) -> None:
            text = "  ".join(f"{name} {v:.4f}" for name, v in running.items())
            self._progress.update(task, completed=done, running=prefix + text if text else "")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
