"""`splatfield bench curve`: test PSNR against training time from a run's checkpoints, the
JSON, the PNG, --every, --max-seconds, labels and the one-line errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.apps import cli
from splatfield.apps.bench import curve_plot, curve_timing
from splatfield.apps.run_data import background_of, load_dataset
from splatfield.scenes.checkpoint import checkpoints, load_checkpoint
from splatfield.scenes.evaluate import evaluate
from splatfield.scenes.run import Run

STEPS, EVERY_STEPS, TEST_VIEWS = 60, 20, 5


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory, native) -> Path:
    """A 60-step run on a 32x32 procedural dataset (5 test views) with a checkpoint every 20 steps, all kept."""
    from splatfield.apps import training
    from splatfield.data import procedural
    from splatfield.scenes.options import run_config

    root = tmp_path_factory.mktemp("curve_run")
    data = procedural.write_demo_dataset(root / "data", size=32, train_views=8, test_views=TEST_VIEWS)
    config = run_config(str(data), str(root / "run"), steps=STEPS, init_points=1000, init_half_size=1.0, sh_degree=0,
                        checkpoint_every=EVERY_STEPS, keep_checkpoints=10, save_renders=False, eval=False)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few seconds, also on a busy 2-core machine
    try:
        training.train(config, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def curve(*args: str, capsys) -> tuple[int, str, str]:
    code = cli.run(["bench", "curve", *args, "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str, starts: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"splatfield: error: {starts}"), lines[0]
    return lines[0]


def direct_eval(run: Path, step: int, views: list[int] | None = None) -> tuple[float, float]:
    """PSNR and SSIM of the checkpoint of ``step``, evaluated the way `splatfield eval` does, meaned over ``views``."""
    r = Run.open(run)
    dataset = load_dataset(r.config)
    split = dataset.test
    res = evaluate(r.scene(step=step, device="cpu"), split.cameras.to(dtype=torch.float32), split.image,
                   background=background_of(dataset), mask_at=split.mask, use_lpips=False)  # fmt: skip
    rows = res.per_view if views is None else [res.per_view[i] for i in views]
    return sum(r_["psnr"] for r_ in rows) / len(rows), sum(r_["ssim"] for r_ in rows) / len(rows)


# ----------------------------------------------------------------------------- parsing


def test_parse():
    cmd = cli.parse(["bench", "curve", "a", "b", "--label", "x", "--label", "y", "--every", "3", "--max-seconds", "90",
                     "--png", "c.png", "--png-size", "640", "400"])  # fmt: skip
    assert isinstance(cmd, cli.BenchCurve)
    assert cmd.runs == (Path("a"), Path("b")) and cmd.label == ("x", "y")
    assert (cmd.every, cmd.max_seconds, cmd.png, cmd.png_size) == (3, 90.0, Path("c.png"), (640, 400))
    assert cli.parse(["bench", "curve", "a"]).every == 1


# ----------------------------------------------------------------------------- the curve


def test_curve_json_table_and_png(curve_run, tmp_path, capsys):
    out_json, out_png = tmp_path / "curve.json", tmp_path / "curve.png"
    code, out, err = curve(str(curve_run), "--json", str(out_json), "--png", str(out_png), "--png-size", "640", "400",
                           capsys=capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["every"] == 1 and doc["max_seconds"] is None and doc["device"] == "cpu"
    (c,) = doc["runs"]
    assert c["label"] == "run" and c["run"] == str(curve_run) and c["split"] == "test"
    assert c["views"] == list(range(TEST_VIEWS)) and c["images"] == [f"r_{i}.png" for i in range(TEST_VIEWS)]
    found = checkpoints(curve_run / "checkpoints")
    assert [s for s, _ in found] == list(range(EVERY_STEPS, STEPS + 1, EVERY_STEPS))
    points = c["points"]
    assert [p["step"] for p in points] == [s for s, _ in found]  # one point per checkpoint, in step order
    for p, (step, path) in zip(points, found):
        state = load_checkpoint(path)
        assert p["train_seconds"] == float(state["train_seconds"]) > 0
        assert math.isfinite(p["psnr"]) and 0 < p["ssim"] <= 1
        psnr, ssim = direct_eval(curve_run, step)
        assert p["psnr"] == pytest.approx(psnr, abs=1e-6) and p["ssim"] == pytest.approx(ssim, abs=1e-6)
        assert p["count"] == len(Run.open(curve_run).scene(step=step)) and p["count_label"] == "Gaussians"
    assert [p["train_seconds"] for p in points] == sorted(p["train_seconds"] for p in points)
    assert points[-1]["psnr"] > points[0]["psnr"]  # training helped

    # the table: a row per point, then the last PSNR
    rows = [line.split() for line in out.splitlines() if line.startswith("run ") and line.split()[1].isdigit()]
    assert [int(r[1]) for r in rows] == [p["step"] for p in points]
    assert [float(r[3]) for r in rows] == [round(p["psnr"], 3) for p in points]
    assert f"run: last PSNR {points[-1]['psnr']:.3f} dB at step {STEPS}" in out

    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.size == (640, 400)
        colours = set(map(tuple, np.asarray(img.convert("RGB")).reshape(-1, 3).tolist()))
    assert curve_plot.PALETTE[0] in colours  # the run's line


def test_every_picks_views(curve_run, capsys, tmp_path):
    code, out, err = curve(str(curve_run), "--every", "2", "--json", str(tmp_path / "c.json"), capsys=capsys)
    assert code == 0, err
    (c,) = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert c["views"] == [0, 2, 4] and c["images"] == ["r_0.png", "r_2.png", "r_4.png"]
    for p in c["points"]:
        psnr, ssim = direct_eval(curve_run, p["step"], views=[0, 2, 4])
        assert p["psnr"] == pytest.approx(psnr, abs=1e-6) and p["ssim"] == pytest.approx(ssim, abs=1e-6)
    assert "3 of the test views" in out
    assert curve_timing.view_indices(5, 3) == [0, 3] and curve_timing.view_indices(5, 9) == [0]


def test_max_seconds_drops_later_checkpoints(curve_run, capsys, tmp_path):
    seconds = [float(load_checkpoint(p)["train_seconds"]) for _, p in checkpoints(curve_run / "checkpoints")]
    limit = (seconds[0] + seconds[1]) / 2
    code, out, err = curve(str(curve_run), "--max-seconds", repr(limit), "--json", str(tmp_path / "c.json"),
                           capsys=capsys)  # fmt: skip
    assert code == 0, err
    (c,) = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert [p["step"] for p in c["points"]] == [EVERY_STEPS]
    assert c["points"][0]["train_seconds"] == seconds[0] and c["checkpoints_skipped"] == 2
    assert "2 later checkpoints past --max-seconds" in out

    code, out, err = curve(str(curve_run), "--max-seconds", "0", capsys=capsys)
    assert code == 0, err
    assert "run: no checkpoint within --max-seconds 0" in out


def test_labels_and_two_runs(curve_run, capsys, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(curve_run, other)
    code, out, err = curve(str(curve_run), str(other), "--label", "first", "--label", "second run", "--every", "5",
                           "--json", str(tmp_path / "c.json"), "--png", str(tmp_path / "c.png"), capsys=capsys)  # fmt: skip
    assert code == 0, err
    runs = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert [c["label"] for c in runs] == ["first", "second run"]
    assert [c["run"] for c in runs] == [str(curve_run), str(other)]
    assert [p["psnr"] for p in runs[0]["points"]] == [p["psnr"] for p in runs[1]["points"]]  # the same checkpoints
    assert "first: last PSNR" in out and "second run: last PSNR" in out
    with Image.open(tmp_path / "c.png") as img:
        assert img.size == (900, 560)
        colours = set(map(tuple, np.asarray(img.convert("RGB")).reshape(-1, 3).tolist()))
    assert curve_plot.PALETTE[0] in colours and curve_plot.PALETTE[1] in colours


def test_plot_ticks():
    assert curve_plot.nice_step(10, 5) == 2 and curve_plot.nice_step(0.05, 5) == 0.01
    assert curve_plot.nice_step(12, 5) == 2.5
    lo, hi, ts, step = curve_plot.ticks(21.3, 30.8, 6)
    assert (lo, hi, step) == (20, 32, 2) and ts[0] == 20 and ts[-1] == 32
    assert curve_plot.tick_label(0.25, 0.05) == "0.25" and curve_plot.tick_label(7.5, 2.5) == "7.5"
    assert curve_plot.tick_label(0.0, 0.002) == "0"
    img = curve_plot.draw_curves([curve_plot.Series("empty", [], [])], size=(320, 240))  # nothing to draw: still a plot
    assert img.size == (320, 240)


# ----------------------------------------------------------------------------- errors


def test_errors_are_one_line(curve_run, tmp_path, capsys):
    def fails(*args: str, starts: str) -> str:
        code, _, err = curve(*args, capsys=capsys)
        return one_line_error(code, err, starts)

    missing = tmp_path / "missing"
    fails(str(missing), starts=f"{missing}: no such file")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    fails(str(a_file), starts=f"{a_file}: not a run directory")
    fails(str(tmp_path), starts=f"{tmp_path}: not a run directory (no config.yaml)")

    bad_config = tmp_path / "bad_config"
    bad_config.mkdir()
    (bad_config / "config.yaml").write_text("hello: [")
    fails(str(bad_config), starts=f"{bad_config / 'config.yaml'}: not a splatfield")

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(curve_run / "config.yaml", no_ckpt / "config.yaml")
    fails(str(curve_run), str(no_ckpt), starts=f"{no_ckpt / 'checkpoints'}: no checkpoint")

    broken = tmp_path / "broken"
    shutil.copytree(curve_run, broken)
    (broken / "checkpoints" / "step_0000040.pt").write_bytes(b"not a checkpoint")
    fails(str(broken), starts=f"{broken / 'checkpoints' / 'step_0000040.pt'}: not a readable checkpoint")

    line = fails(str(curve_run), str(curve_run), "--label", "x", starts="--label")
    assert "2 runs, 1 label" in line
    fails(str(curve_run), "--every", "0", starts="--every")
    fails(str(curve_run), "--max-seconds", "-1", starts="--max-seconds")
    nowhere = tmp_path / "nowhere" / "c.png"
    fails(str(curve_run), "--png", str(nowhere), starts=f"{nowhere}: folder")


def test_error_in_a_process(curve_run, tmp_path):
    """The command line as a user runs it: a run without checkpoints is one line, exit 2."""
    run = tmp_path / "empty_run"
    run.mkdir()
    shutil.copy(curve_run / "config.yaml", run / "config.yaml")
    proc = subprocess.run([sys.executable, "-m", "splatfield.apps.cli", "bench", "curve", str(run), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    one_line_error(proc.returncode, proc.stderr, starts=f"{run / 'checkpoints'}: no checkpoint")
    assert proc.stdout == ""
