"""`splatfield export`: every format written from a run, decoded, and compared."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from splatfield.apps import exporting as ex
from splatfield.scenes.crop import CleanOptions
from splatfield.scenes.run import RunError
from splatfield.scenes import formats

FORMATS = ("ply", "splat", "compressed-ply", "spz", "sog")


def test_export_every_format_from_a_run(small_run, native):
    before = (small_run / "scene.ply").read_bytes()
    src = ex.load_source(small_run, views=0)
    assert src.image_at is not None and len(src.cameras) == 3
    rows = ex.export(src, FORMATS)
    assert [r.format for r in rows] == list(FORMATS)
    by = {r.format: r for r in rows}
    assert (small_run / "scene.ply").read_bytes() == before  # never overwritten
    assert by["ply"].path == small_run / "exports" / "scene.ply"
    assert math.isinf(by["ply"].psnr_vs_full) and by["ply"].psnr_drop == pytest.approx(0.0, abs=1e-9)
    assert by["ply"].ratio_to_ply == pytest.approx(1.0)
    n = len(src.gaussians)
    for fmt in FORMATS[1:]:
        r = by[fmt]
        assert r.bytes == (sum(p.stat().st_size for p in r.path.rglob("*")) if r.path.is_dir() else r.path.stat().st_size)
        assert r.bytes_per_splat == pytest.approx(r.bytes / n)
        assert r.ratio_to_ply > 2.0, (fmt, r.ratio_to_ply)
        assert 15.0 < r.psnr_vs_full < math.inf, (fmt, r.psnr_vs_full)  # lossy but close
        assert r.psnr_vs_truth is not None and r.psnr_drop is not None
    assert by["splat"].bytes == 32 * n


def test_export_options_and_refusal(small_run, tmp_path, native):
    src = ex.load_source(small_run, views=1)
    assert len(src.cameras) == 1
    rows = ex.export(ex.cleaned(src, CleanOptions(min_opacity=0.5))[0], ["ply"], out_dir=tmp_path, sh_degree=0)
    g = formats.read_ply(rows[0].path)
    assert g.max_sh_degree == 0 and len(g) < len(src.gaussians)
    with pytest.raises(RunError, match="refusing to overwrite"):
        ex.export(src, ["ply"], out_dir=small_run)


def test_export_command_table_and_errors(small_run, tmp_path, native):
    ply = small_run / "scene.ply"
    proc = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "export", str(ply), "--format", "spz", "splat",
                           "--out", str(tmp_path), "--views", "2"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:2] == ["format", "size"]
    assert lines[2].split()[0] == "spz" and lines[3].split()[0] == "splat"
    assert (tmp_path / "scene.spz").is_file() and (tmp_path / "scene.splat").is_file()
    bad = tmp_path / "bad.spz"
    bad.write_bytes(b"not a gzip stream")
    proc = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "export", str(bad)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"splatfield: error: {bad}") and len(proc.stderr.strip().splitlines()) == 1
