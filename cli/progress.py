"""Rich progress display and metric tables for `deepcluster train`."""

from __future__ import annotations

import contextlib
import math
import time

import keras
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# (history key, column title, format) of the per-epoch table.
METRIC_COLUMNS = (
    ("epoch", "epoch", "{:.0f}"),
    ("loss", "loss", "{:.3f}"),
    ("nmi_labels", "NMI labels", "{:.3f}"),
    ("acc_labels", "ACC", "{:.3f}"),
    ("ari_labels", "ARI", "{:.3f}"),
    ("nmi_previous", "NMI t-1", "{:.3f}"),
    ("label_entropy", "entropy", "{:.3f}"),
    ("clusters", "clusters", "{:.0f}"),
    ("cluster_min", "min", "{:.0f}"),
    ("cluster_max", "max", "{:.0f}"),
    ("seconds_features", "feat s", "{:.1f}"),
    ("seconds_kmeans", "kmeans s", "{:.2f}"),
    ("seconds_train", "train s", "{:.1f}"),
    ("seconds_epoch", "epoch s", "{:.1f}"),
)

_PHASES = {"features": "extract features", "clustering": "cluster", "train": "train"}


class TrainingProgress(keras.callbacks.Callback):
    """Bars for the epochs and for the phase of the current epoch, with ETA.

    Pass `on_progress` to the `Reclustering` callback so the extraction and
    clustering phases show too; put this callback after it (and after the
    run recorder) so each epoch's line holds the epoch's metrics.

    Args:
        console: Where to draw.
        epochs: Number of epochs of the run.
        progress: A running `progress_bars()` display to add the bars to (a
            sweep's, whose own bar stays on top); None draws its own.
    """

    # Rich's display is thread-safe: Keras may call the batch hook from a
    # thread, so the training loop never waits for the host (`StopOnNaN`).
    async_safe = True

    def __init__(self, console: Console, epochs: int, progress: Progress | None = None):
        super().__init__()
        self.console = console
        self.owns_display = progress is None
        self.progress = progress or progress_bars(console)
        self.epochs = epochs
        self.phase = None

    def on_progress(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.phase = phase
            self.progress.reset(
                self.phase_task, total=total, description=_PHASES[phase], visible=True
            )
        self.progress.update(self.phase_task, completed=done)

    def on_train_begin(self, logs=None):
        # The bars appear only once training starts (a sweep skips finished runs).
        self.epochs_task = self.progress.add_task("epochs", total=self.epochs)
        self.phase_task = self.progress.add_task("", total=1, visible=False)
        if self.owns_display:
            self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        # `completed=epoch`: a resumed run starts part-way.
        self.progress.update(self.epochs_task, description=f"epoch {epoch}", completed=epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self.phase != "train":
            self.on_progress("train", 0, self.params.get("steps") or 1)
        self.progress.update(self.phase_task, completed=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.phase = None
        self.progress.advance(self.epochs_task)
        logs = logs or {}
        parts = [f"epoch {epoch}"]
        for key, title, fmt in METRIC_COLUMNS[1:7]:
            if key in logs:
                parts.append(f"{title} {cell(logs[key], fmt)}")
        self.console.print("  ".join(parts))

    def on_train_end(self, logs=None):
        if self.owns_display:
            self.progress.stop()
        else:
            self.progress.remove_task(self.epochs_task)
            self.progress.remove_task(self.phase_task)


def progress_bars(console: Console) -> Progress:
    """The progress display: description, bar, count, elapsed time and ETA."""
    return Progress(
        TextColumn("{task.description:<17}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def cell(value: float | None, fmt: str) -> str:
    """A metric as text: "–" where there is none (None or NaN, e.g. NMI t-1 in epoch 0)."""
    return "–" if value is None or math.isnan(value) else fmt.format(value)


def metrics_table(rows: list[dict], title: str = "per-epoch metrics") -> Table:
    """A rich table of history rows (columns present in the rows only)."""
    columns = [c for c in METRIC_COLUMNS if any(c[0] in row for row in rows)]
    table = Table(title=title)
    for _, name, _ in columns:
        table.add_column(name, justify="right")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            cells.append(cell(row.get(key), fmt))
        table.add_row(*cells)
    return table


@contextlib.contextmanager
def cache_progress(console: Console | None):
    """An ``on_progress(done, total)`` for building an image cache: a bar with images/s and ETA.

    The bar shows once the first chunk is done, so a cache that is reused draws nothing.
    """
    if console is None:
        yield None
        return
    bars = Progress(
        TextColumn("caching images"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} images/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task, started = None, time.perf_counter()

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bars.start()
            task = bars.add_task("", total=total, rate="…")
        rate = done / max(time.perf_counter() - started, 1e-9)
        bars.update(task, completed=done, rate=f"{rate:,.0f}")
        if done >= total:  # the bar goes before training's display comes
            bars.stop()

    try:
        yield on_progress
    finally:
        bars.stop()


def load_data(console: Console, recipe, run=None, data_dir=None):
    """The recipe's images (`keras_deepcluster.runs.recipe_data.load_data`), with a cache bar.

    With `run`, the images that run trained on (`recipe_data.recorded_data`).
    """
    from keras_deepcluster.runs import recipe_data

    with cache_progress(console) as on_progress:
        if run is None:
            return recipe_data.load_data(recipe, on_progress=on_progress, on_note=console.print)
        return recipe_data.recorded_data(run, recipe, data_dir, on_progress, console.print)


def report_cache(console: Console, cache) -> None:
    """One line on a cache: where, how many images, and the files that could not be read.

    Not wrapped by rich: a path broken over lines cannot be copied.
    """
    for line in cache.describe():
        console.print(line, soft_wrap=True)


def effect_lines(summary: dict) -> list[str]:
    """What training did to the clustering (`callbacks.describe_effect`), a worse one in red."""
    from keras_deepcluster.runs.callbacks import describe_effect

    lines = []
    for line in describe_effect(summary):
        line = escape(line)
        if line.startswith("warning:"):
            line = "[bold red]warning:[/bold red]" + line.removeprefix("warning:")
        elif line.endswith(" worse"):
            line = line.removesuffix(" worse") + " [bold red]worse[/bold red]"
        lines.append(line)
    return lines
