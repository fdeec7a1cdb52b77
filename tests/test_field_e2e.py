"""End to end for the radiance field: training on a small lego subset reaches a PSNR floor;
a run resumed from a checkpoint ends identical to an uninterrupted one; SIGINT leaves a
checkpoint that resumes; eval, render --split test and bench train work on a field run,
and export refuses it in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from splatfield.apps import training as tr
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.options import RunConfig, run_config

from .conftest import SHARED, ctrl_c_works
from .test_train_e2e import lego_small  # noqa: F401  (the fixture: 24 train, 6 test views)

LEGO = SHARED / "datasets" / "nerf_synthetic_lego"
pytestmark = pytest.mark.shared_data(LEGO)

# The grey starting field scores 9.6 dB on these 6 test views (100x100); a working trainer
# reached 22.7 dB in 600 steps (about 20 s on 2 cores); one that learns nothing, or learns
# wrongly, stays far below the floor.
PSNR_FLOOR = 20.0
CLI = [sys.executable, "-m", "splatfield.apps.cli"]


def field_options(data: Path, out: Path, **kw) -> RunConfig:
    base = dict(downscale=8.0, save_renders=False, field_resolution=64, field_grow_at=(100, 250), field_rays=2048)
    base.update(kw)
    return run_config(str(data), str(out), scene_kind="field", **base)


@pytest.fixture(scope="module")
def field_run(lego_small, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("field") / "run"
    res = tr.train(field_options(lego_small, out, steps=600, checkpoint_every=300), log=lambda m: None)
    assert res.finished and res.step == 600
    return out


def test_short_field_training_reaches_psnr_floor(field_run, native):
    m = json.loads((field_run / "metrics.json").read_text())
    assert m["scene_kind"] == "field" and m["count_label"] == "grid vertices"
    assert m["psnr"] > PSNR_FLOOR, f"test PSNR {m['psnr']:.2f} dB"
    assert (field_run / "renders" / "test").is_dir() is False  # save_renders off
    assert not (field_run / "scene.ply").exists()  # a field has no splats


def test_resumed_field_run_ends_identical(lego_small, tmp_path, native):  # noqa: F811
    cfg = field_options(lego_small, tmp_path / "a", steps=320, checkpoint_every=160, keep_checkpoints=5, eval=False)
    tr.train(cfg, log=lambda m: None)
    straight = torch.load(tmp_path / "a" / "checkpoints" / "step_0000320.pt", weights_only=False)
    # the same run as it stood at its step-160 checkpoint (between the growths), resumed
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "step_0000320.pt").unlink()
    res = tr.train(cfg, run_path=tmp_path / "b", resume=True, log=lambda m: None)
    assert res.finished and res.step == 320
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "step_0000320.pt", weights_only=False)
    for key in ("index", "density", "color", "occupancy"):
        assert torch.equal(resumed["scene"][key], straight["scene"][key]), key
    assert resumed["scene"]["level"] == straight["scene"]["level"] == 2


def test_sigint_saves_a_field_checkpoint_that_resumes(lego_small, tmp_path, native):  # noqa: F811
    out = tmp_path / "run"
    args = [*CLI, "train", str(lego_small), "--model", "field", "--downscale", "8", "--steps", "100000",
            "--field.resolution", "32", "--field.grow-at", "20", "60", "--no-viewer", "--out", str(out)]  # fmt: skip
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ctrl_c_works,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "config.yaml").exists():
            time.sleep(0.5)
        time.sleep(8)  # some steps
        p.send_signal(signal.SIGINT)
        text, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, text
    assert "stopped by SIGINT" in text and "Traceback" not in text
    saved = ckpt.checkpoints(out / "checkpoints")
    assert saved, text
    state = torch.load(saved[-1][1], weights_only=False)
    assert state["scene"]["kind"] == "field" and state["step"] > 0
    res = subprocess.run([*CLI, "train", "--resume", str(out), "--steps", str(state["step"] + 5), "--no-viewer",
                          "--no-eval"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"trained {state['step'] + 5} steps" in res.stdout


def test_eval_render_and_export_on_a_field_run(field_run, tmp_path, native):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    ev = subprocess.run([*CLI, "eval", str(field_run)], capture_output=True, text=True, timeout=300, env=env)
    assert ev.returncode == 0, ev.stderr
    assert "grid vertices" in ev.stdout
    m = json.loads((field_run / "metrics.json").read_text())
    assert m["psnr"] > PSNR_FLOOR
    rd = subprocess.run([*CLI, "render", str(field_run), "--split", "test", "--out", str(tmp_path / "r")],
                        capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert rd.returncode == 0, rd.stderr
    assert len(list((tmp_path / "r").glob("*.png"))) == 6
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["psnr"] == pytest.approx(m["psnr"], abs=1e-3)
    ex = subprocess.run([*CLI, "export", str(field_run), "--format", "ply", "--out", str(tmp_path / "x.ply")],
                        capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert ex.returncode != 0
    lines = [ln for ln in ex.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "field" in lines[0] and "Traceback" not in ex.stderr, ex.stderr


def test_bench_train_times_a_field(lego_small, tmp_path, native):  # noqa: F811
    out = tmp_path / "b.json"
    r = subprocess.run([*CLI, "bench", "train", str(lego_small), "--model", "field", "--downscale", "8", "--steps", "5",
                        "--warmup", "3", "--json", str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    j = json.loads(out.read_text())
    assert j["scene_kind"] == "field" and j["steps"] == 5 and j["warmup_steps"] == 3
    assert j["samples_per_ray"] > 0 and j["rays_per_step"] == 4096
    assert len(j["step_ms_all"]) == 5
