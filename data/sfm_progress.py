"""Progress of the SfM phases: counts, a total and an estimate of the time left.

SfM reports progress the way training and evaluation do (``apps.training.Phase``):
``on_phase(name, total)`` when a phase starts returns ``tick(n)``, called with the count
done since the last call. The command line shows a progress bar per phase on a terminal
(``apps.sfm_choices.sfm_console``); elsewhere (a log file, ``splatfield train PHOTOS``)
:class:`EtaLines` writes a line with the count and the time left at most every
:data:`LINE_EVERY_S` seconds, so a long phase is never silent.

The phases, in order, and what they count (:data:`UNITS`): frames (a video's windows),
reading images, preparing images, features (images), codebook and similarity (only for
the retrieval matcher), matching and verification (image pairs), mapping (images
registered; a model that stays small leaves the count short of the total) and writing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

Tick = Callable[[int], None]
Phase = Callable[[str, int], Tick]

UNITS = {
    "frames": "frame",
    "reading images": "image",
    "preparing images": "image",
    "features": "image",
    "codebook": "iteration",
    "similarity": "image",
    "matching": "pair",
    "verification": "pair",
    "mapping": "image",
    "writing": "step",
}
LINE_EVERY_S = 30.0


def no_progress(name: str, total: int) -> Tick:
    return lambda n: None


def unit_of(phase: str) -> str:
    return UNITS.get(phase, "item")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def seconds_left(done: int, total: int, elapsed: float) -> float | None:
    """Time left at the rate so far (None before anything is done)."""
    if done <= 0:
        return None
    return elapsed / done * max(0, total - done)


def progress_line(name: str, done: int, total: int, elapsed: float) -> str:
    unit = unit_of(name)
    left = seconds_left(done, total, elapsed)
    pct = 100 * done / total if total else 100.0
    return (f"{name}: {done:,} of {total:,} {unit}s ({pct:.0f}%) in {duration(elapsed)}, "
            + ("time left unknown" if left is None else f"about {duration(left)} left"))  # fmt: skip


class EtaLines:
    """An ``on_phase`` that logs the count and the time left at most every ``every`` seconds
    of a phase (nothing for a phase shorter than that: its end is logged anyway)."""

    def __init__(self, log: Callable[[str], None], every: float = LINE_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.log, self.every, self.clock = log, every, clock

    def __call__(self, name: str, total: int) -> Tick:
        start = self.clock()
        state = {"done": 0, "last": start}

        def tick(n: int) -> None:
            state["done"] += n
            now = self.clock()
            if now - state["last"] >= self.every and state["done"] < total:
                state["last"] = now
                self.log(progress_line(name, state["done"], total, now - start))

        return tick


def capped(tick: Tick, total: int) -> Tick:
    """``tick`` that never counts past ``total`` (mapping may register an image twice when a
    model is started again)."""
    state = {"done": 0}

    def cap(n: int) -> None:
        n = min(n, total - state["done"])
        if n > 0:
            state["done"] += n
            tick(n)

    return cap


@contextlib.contextmanager
def counting_files(folder: Path, pattern: str, tick: Tick, every: float = 0.5) -> Iterator[None]:
    """Ticks as files matching ``pattern`` appear in ``folder`` while the block runs (for a
    stage that writes its outputs one by one and has no callback: the video's frames)."""
    stop = threading.Event()
    seen = {"n": 0}

    def count() -> None:
        n = sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0
        if n > seen["n"]:
            tick(n - seen["n"])
            seen["n"] = n

    def watch() -> None:
        while not stop.wait(every):
            count()

    watcher = threading.Thread(target=watch, name="sfm-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        count()
