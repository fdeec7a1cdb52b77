"""``splatfield sfm``, the SfM step of ``splatfield train PHOTOS_OR_VIDEO`` and
``splatfield bench sfm``: glue between the CLI and :mod:`splatfield.data.sfm`.

Each stage prints one line with its counts and seconds; the summary is also in
``<out>/sfm.json``. The bench runs SfM afresh (never from the cache, so its seconds are
real) and compares the recovered cameras with reference poses after a similarity alignment.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from splatfield.data import sfm as sfm_data
from splatfield.data.pose_alignment import compare_to_reference

from .bench import machine_info


def describe(summary: dict[str, Any]) -> str:
    """One line: registered images, points, reprojection error, seconds."""
    return (f"{summary['images_registered']} of {summary['images_total']} images registered, {summary['points']:,} "
            f"points, mean reprojection error {summary['mean_reprojection_error_px']:.2f} px, "
            f"{summary['seconds']:.0f} s")  # fmt: skip


def run(source: Path, out: Path | None, opts: sfm_data.SfmOptions, log: Callable[[str], None]) -> sfm_data.SfmResult:
    """The SfM output for ``source``, made or reused (and saying which)."""
    res = sfm_data.cached_or_run(source, out, opts, log=lambda m: log(f"sfm: {m}"))
    if res.reused:
        log(f"sfm: reusing {res.out} (SfM made earlier for this input and these options: {describe(res.summary)}; "
            f"remove that folder to redo it)")  # fmt: skip
        skipped = res.summary.get("skipped") or {}
        if skipped:
            log("sfm: skipped then: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in skipped.items()))
    return res


def capture_for_training(data: Path, log: Callable[[str], None]) -> Path:
    """``data`` itself when it is a dataset, else (photos or a video) its SfM output."""
    if sfm_data.input_kind(data) is None:
        return data
    log(f"sfm: {data} is a {'video' if sfm_data.is_video(data) else 'folder of photos'}: structure from motion first")
    res = run(data, None, sfm_data.SfmOptions(), log)
    if not res.reused:
        log(f"sfm: {describe(res.summary)} -> {res.out}")
    return res.out


def bench(source: Path, reference: Path, opts: sfm_data.SfmOptions, out: Path | None,
          log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Runs SfM on ``source`` from scratch and compares its cameras with ``reference``'s."""
    tmp = None
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="splatfield-bench-sfm-"))
        out = tmp / "sfm"
    try:
        summary = sfm_data.run_sfm(source, out, opts, log=lambda m: log(f"sfm: {m}"))
        cmp, missing = compare_to_reference(out, reference)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "source": str(source),
        "reference": str(reference),
        "output": None if tmp is not None else str(out),
        "sfm": summary,
        "alignment": cmp.to_json(),
        "reference_images_not_registered": missing,
        "machine": machine_info(),
    }
