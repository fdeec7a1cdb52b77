"""What the commands print: log lines, progress bars, the tables and summaries of results.

Progress bars go to stderr and show only on a terminal; a training logged to a file gets a
line every 5% of its steps instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

PROG = "splatfield"


def say(message: str) -> None:
    """The commands' log lines: printed at once (they interleave with progress bars)."""
    print(message, flush=True)


def progress(total: int, desc: str, unit: str):
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent when stderr is a file or a pipe.
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None, file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def bars() -> Iterator[list]:
    """A list of progress bars, all closed on the way out."""
    opened: list = []
    try:
        yield opened
    finally:
        for b in opened:
            b.close()


def phase_bar(opened: list) -> Callable[[str, int], Callable[[int], None]]:
    """on_phase of a training or evaluation: a progress bar per phase (loading, evaluating)."""

    def start(name: str, total: int) -> Callable[[int], None]:
        for b in opened:
            b.close()
        opened.clear()
        opened.append(progress(total, name, "view"))
        return opened[-1].update

    return start


def train_progress(steps: int, opened: list) -> Callable[[Any], None]:
    """on_step of a training: one bar over the steps with loss, PSNR and the scene's count;
    when stderr is not a terminal (a log file), a line every 5% of the steps instead."""
    state: dict = {"bar": None, "t": None}
    every = max(1, steps // 20)

    def on_step(info: Any) -> None:
        if state["bar"] is None:
            for b in opened:
                b.close()
            opened.clear()
            state["bar"] = progress(steps, "training", "step")
            state["bar"].update(info.step - 1)
            opened.append(state["bar"])
        bar = state["bar"]
        bar.update(1)
        if bar.disable and (info.step % every == 0 or info.step == steps):
            now = time.perf_counter()
            rate = "" if state["t"] is None else f", {(now - state['t'][0]) / (info.step - state['t'][1]):.3f} s/step"
            state["t"] = (now, info.step)
            print(f"step {info.step}/{steps}: loss {info.loss:.4f}, train-view PSNR {info.psnr:.2f} dB, "
                  f"{info.num_gaussians:,} {info.count_label}{rate}", flush=True)  # fmt: skip
        if info.changes:
            bar.write(f"step {info.step}: {describe_changes(info.changes)} -> {info.num_gaussians:,} {info.count_label}",
                      file=sys.stdout)  # fmt: skip
        if info.step % 10 == 0 or info.step == steps:
            bar.set_postfix(loss=f"{info.loss:.4f}", psnr=f"{info.psnr:.2f}", n=f"{info.num_gaussians:,}", refresh=False)

    return on_step


def describe_changes(changes: dict) -> str:
    """One log line for what the strategies did at a step (counts, then the λ_min distribution)."""
    parts = []
    if "candidates" in changes:
        parts.append(f"split {changes['split']:,} of {changes['candidates']:,} candidates")
    else:
        parts += [f"{k} {changes[k]:,}" for k in ("cloned", "split") if k in changes]
    if changes.get("capped"):
        parts.append(f"{changes['capped']:,} left out at --adc.max-gaussians")
    if "pruned" in changes:
        parts.append(f"pruned {changes['pruned']:,}")
    if "opacity_reset" in changes:
        parts.append("opacities reset")
    if "lambda_p50" in changes:
        parts.append(f"lambda_min p1 {changes['lambda_p01']:.2e}, p10 {changes['lambda_p10']:.2e}, "
                     f"median {changes['lambda_p50']:.2e}, {100 * changes['negative_fraction']:.0f}% negative")  # fmt: skip
    return ", ".join(parts)


def print_metrics(m: dict) -> None:
    lp = "unavailable" if m["lpips"] is None else f"{m['lpips']:.4f}"
    objects = m.get("alpha_outside_masks")
    where = "whole images against image x mask + background" if objects is not None else None
    print(f"{m['split']} views: {m['views']} at {m['width']}x{m['height']} — PSNR {m['psnr']:.3f} dB, "
          f"SSIM {m['ssim']:.4f}, LPIPS {lp}; {m['num_gaussians']:,} {m.get('count_label', 'Gaussians')}"
          + (f" ({where}; mean alpha outside the masks {objects:.4f})" if where else ""))  # fmt: skip
    if m.get("headline") == "aligned":
        g = m["as_given"]
        print(f"  (test cameras aligned, {m['align_steps']} steps per view, the scene frozen; as given: PSNR "
              f"{g['psnr']:.3f} dB, SSIM {g['ssim']:.4f})")  # fmt: skip


def report_stop(signal_name: str | None, step: int, saved: str, resume_command: str) -> int:
    """Says where a stopped training was saved and how to continue; returns the exit status."""
    print(f"stopped by {signal_name} at step {step}; {saved}")
    print(f"continue with: {resume_command}")
    return 130 if signal_name == "SIGINT" else 143


def write_json(path: Path | None, doc: dict) -> None:
    """A benchmark's results as JSON (atomically), when --json was given."""
    if path is not None:
        from splatfield.scenes.checkpoint import write_json_atomic

        write_json_atomic(path, doc)
        print(f"wrote {path}")


def sfm_console(opened: list, log: Callable[[str], None]) -> tuple[Callable[[str], None], Callable]:
    """(log, on_phase) for SfM: a progress bar per phase (count, rate, time left) on a
    terminal, closed when the next line is logged (the phase's result); where bars do not
    show (a log file), a line with the time left every 30 s of a phase instead."""
    from splatfield.data.sfm_progress import EtaLines, unit_of

    lines = EtaLines(lambda m: log(f"sfm: {m}"))

    def close_bars() -> None:
        for b in opened:
            b.close()
        opened.clear()

    def log_line(message: str) -> None:
        close_bars()
        log(message)

    def on_phase(name: str, total: int) -> Callable[[int], None]:
        close_bars()
        bar = progress(total, f"sfm: {name}", unit_of(name))
        if bar.disable:
            return lines(name, total)
        opened.append(bar)
        return bar.update

    return log_line, on_phase
