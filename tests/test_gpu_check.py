"""`.ci/gpu-check --dry-run`: the GPU machine's prepared command, run here on the CPU.

A lent GPU gets one ~9-minute call; a typo found there costs the whole session's device time.
The dry run prepares a small carry folder, runs every stage's command on the CPU with tiny
sizes, audits what they import against the device's packages and prints the device call. This
test checks that it succeeds and that every file the device run returns is there and parses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LEGO = REPO.parent / "shared" / "datasets" / "nerf_synthetic_lego"
FILES = ("gpu-check.json", "gpu-check.log", "doctor.json", "tests.json", "raster_100k.json", "raster_1m_1080p.json",
         "train_lego.json", "gsplat_lego.json")  # fmt: skip


def test_dry_run_writes_every_stage_file(native, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / ".ci" / "gpu-check"), "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, f"dry run failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "import audit: all" in proc.stdout, proc.stdout[-3000:]

    # the device returns at most 8 files from $OUT: these, and nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    docs = {name: json.loads((out / name).read_text()) for name in FILES if name.endswith(".json")}
    summary = docs["gpu-check.json"]
    assert summary["mode"] == "dry-run" and list(summary["stages"]) == ["setup", "tests", "raster", "train", "gsplat"]
    for name, stage in summary["stages"].items():
        assert stage["status"] in ("ok", "skipped"), (name, stage)
        assert all((out / f).is_file() for f in stage["files"]), (name, stage)

    assert docs["doctor.json"]["extensions"]["cpu"]["state"] == "built"
    tests = docs["tests.json"]
    assert tests["tests"] > 10 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():  # every GPU test is collected and skips here
        assert tests["skipped"] == tests["tests"]
        assert all(case["outcome"] == "skipped" for case in tests["cases"])
    for name in ("raster_100k.json", "raster_1m_1080p.json"):
        r = docs[name]
        assert r["device"] == "cpu" and r["forward_ms"] > 0 and r["backward_ms"] > 0 and r["width"] == 64
    assert docs["raster_100k.json"]["gaussians"] == docs["raster_1m_1080p.json"]["gaussians"] == 2000
    train = docs["train_lego.json"]
    assert train["steps"] == 3 and train["step_ms_median"] > 0
    if LEGO.is_dir():  # the carried subset is lego's own views at full resolution, here at --downscale 8
        assert (train["width"], train["height"]) == (100, 100)
    side = docs["gsplat_lego.json"]
    assert side["splatfield"]["step_ms_median"] > 0 and side["status"] in ("ok", "skipped")

    # the last line is the device call a GPU session makes
    call = json.loads(proc.stdout.strip().splitlines()[-1])
    assert call["command"] == "python3 .ci/gpu-check" and call["carry"] == [".gpu"] and call["timeout_s"] <= 600
