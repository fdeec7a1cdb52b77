"""The `splatfield` command line: bench raster, demo, errors, and the footprint-pair counter."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from splatfield.apps import cli
from splatfield.apps.console import describe_changes
from splatfield.apps.bench import raster as bench_raster
from splatfield.apps.bench import raster_timing as bench
from splatfield.apps.bench import scene as scene_io
from splatfield.scenes.checkpoint import write_json_atomic
from splatfield.render import STATISTICS, Cameras, Gaussians, reference

from .conftest import ctrl_c_works

REQUIRED_KEYS = {
    "forward_ms", "backward_ms", "pairs_per_s", "peak_rss_mb", "threads", "backend", "gaussians", "width", "height",
}  # fmt: skip
EXTRA_KEYS = {"total_ms", "stats", "scene", "repeats", "cpu", "torch", "device", "peak_device_mb"}


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splatfield.apps.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *, code: int, starts: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip("\n").splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- parsing


def test_literals_mirror_the_renderer():
    assert typing.get_args(bench_raster.StatisticName) == STATISTICS
    assert set(typing.get_args(bench_raster.BackendName)) == {"native", "reference"}
    from splatfield.apps import render, rendering

    assert typing.get_args(render.PathKind) == typing.get_args(rendering.PathKind)


def test_parse_bench_raster_and_demo():
    cmd = cli.parse(["bench", "raster", "--gaussians", "7", "--backend", "native", "reference", "--stats", "grad2d",
                     "importance", "--sh-degree", "2", "--threads", "1"])  # fmt: skip
    assert isinstance(cmd, cli.BenchRaster)
    assert cmd.gaussians == 7 and cmd.scene is None
    assert cmd.backend == ("native", "reference")
    assert cmd.stats == ("grad2d", "importance")
    assert cmd.sh_degree == 2 and cmd.threads == 1
    assert (cmd.width, cmd.height, cmd.repeats, cmd.warmup, cmd.reference_repeats) == (400, 400, 10, 2, 3)
    demo = cli.parse(["demo", "--frames", "3"])
    assert isinstance(demo, cli.Demo) and demo.frames == 3 and demo.size == 128 and demo.steps == 3000


def test_parse_train_eval_and_bench_train():
    cmd = cli.parse(["train", "data/lego", "--steps", "50", "--downscale", "2", "--strategy", "none"])
    assert isinstance(cmd, cli.Train)
    assert cmd.data == Path("data/lego") and cmd.trainer.steps == 50 and cmd.dataset.downscale == 2.0
    assert cmd.strategy == ("none",) and cmd.given == ("--steps", "--downscale", "--strategy")
    assert cmd.resume is None and cmd.out is None and cmd.scene.sh_degree == 3 and cmd.scene.init_points == 100_000
    resume = cli.parse(["train", "--resume", "runs/x"])
    assert resume.data is None and resume.resume == Path("runs/x") and resume.given == ("--resume",)
    ev = cli.parse(["eval", "runs/x"])
    assert isinstance(ev, cli.Eval) and ev.run == Path("runs/x")
    bt = cli.parse(["bench", "train", "data/lego", "--init-half-size", "1.5"])
    assert isinstance(bt, cli.BenchTrain) and bt.init_half_size == 1.5 and bt.steps == 100 and bt.downscale == 2.0
    st = cli.parse(["train", "d", "--strategy", "steepest", "--no-split-grad-gate", "--split-threshold", "0.05",
                    "--max-splits", "1000", "--no-projection-curvature", "--split-displacement", "0.5",
                    "--adc.grad-threshold", "3e-4", "--adc.refine-stop", "900"])  # fmt: skip
    s = st.steepest
    assert (st.strategy, s.split_grad_gate, s.split_threshold, s.max_splits) == (("steepest",), False, 0.05, 1000)
    assert (s.projection_curvature, s.split_displacement) == (False, 0.5)
    assert (st.adc.grad_threshold, st.adc.refine_stop) == (3e-4, 900)
    default = cli.parse(["train", "d", "--strategy", "steepest"])
    assert (default.steepest.split_grad_gate, default.steepest.split_threshold) == (True, 1e-6)


def test_every_train_flag_maps_to_a_run_option():
    from splatfield.apps.train import flag_options
    from splatfield.scenes.options import RunConfig, option_paths

    options = set(option_paths(RunConfig(data="d")))
    table = flag_options()
    assert set(table.values()) <= options
    # every run option except the run's identity (data, out) has a flag; the kind's is --model
    assert options - set(table.values()) == {"data", "out"}
    assert table["--model"] == "scene_kind" and table["--field.resolution"] == "field.resolution"
    assert table["--split-threshold"] == "steepest.split_threshold" and table["--no-eval"] == "outputs.eval"
    assert table["--adc.refine-every"] == "adc.refine_every" and table["--steps"] == "trainer.steps"


def test_steepest_options_reach_the_strategy():
    from splatfield.scenes.options import run_config
    from splatfield.scenes.strategies.options import refine_stop_for
    from splatfield.scenes.strategies.registry import make_strategies

    c = run_config("d", "o", ("steepest",), steps=7000, split_threshold=0.05, split_grad_gate=True, max_splits=10,
                   projection_curvature=False, split_displacement=0.5)  # fmt: skip
    (s,) = make_strategies(c.strategies, scene_kind="gaussians", adc=c.adc, steepest=c.steepest, steps=7000,
                           background=(1.0, 1.0, 1.0)).items  # fmt: skip
    sp = s.split
    assert s.name == "steepest" and s.statistics == ("grad2d", "split2d")
    assert (sp.split_threshold, sp.split_grad_gate, sp.max_splits, sp.projection_curvature, sp.split_displacement) == (
        0.05, True, 10, False, 0.5)  # fmt: skip
    assert s.config.refine_stop == 4900 and s.config.reset_at_refine_start
    assert refine_stop_for(30_000) == 15_000 and refine_stop_for(800) == 560


def test_describe_changes_lines():
    assert describe_changes({"cloned": 3, "split": 1234, "pruned": 5}) == "cloned 3, split 1,234, pruned 5"
    line = describe_changes({"candidates": 30, "split": 12, "pruned": 0, "lambda_p01": -0.3, "lambda_p10": -0.1,
                                 "lambda_p50": -0.01, "negative_fraction": 0.9, "opacity_reset": 1})  # fmt: skip
    assert line == ("split 12 of 30 candidates, pruned 0, opacities reset, lambda_min p1 -3.00e-01, p10 -1.00e-01, "
                    "median -1.00e-02, 90% negative")  # fmt: skip


@pytest.mark.parametrize(
    "argv, starts",
    [
        (["train"], "splatfield: error: DATA: give a dataset folder"),
        (["train", "does/not/exist"], "splatfield: error: does/not/exist: no such file or directory"),
        (["train", "--resume", "norun"], "splatfield: error: norun/config.yaml: not found"),
        (["eval", "norun"], "splatfield: error: norun/config.yaml: not found"),
        (["train", ".", "--steps", "0"], "splatfield: error: --steps: must be >= 1"),
        (["train", ".", "--downscale", "0.5"], "splatfield: error: --downscale: must be >= 1"),
        (["train", "."], "splatfield: error: "),
        (["train", "--strategy", "magic", "."], "usage:"),
    ],
)
def test_train_and_eval_errors_are_one_line(tmp_path, argv, starts):
    proc = run_cli(*argv, cwd=tmp_path)
    if starts == "usage:":
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        return
    line = assert_one_line_error(proc, code=2, starts=starts)
    if argv == ["train", "."]:
        assert line.endswith(f"{tmp_path}: no supported dataset found (expected transforms_train.json (Blender), "
                             "transforms.json, a COLMAP model (sparse/0, sparse or cameras+images next to images/) "
                             "or poses_bounds.npy (LLFF))")  # fmt: skip


def test_train_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_0000010.pt").write_bytes(b"x")
    (tmp_path / "data").mkdir()
    proc = run_cli("train", "data", "--out", "run", cwd=tmp_path)
    assert_one_line_error(proc, code=2, starts="splatfield: error: run: already holds a run (continue it with --resume")


def test_malformed_dataset_is_one_line(tmp_path):
    (tmp_path / "transforms_train.json").write_text("{not json")
    proc = run_cli("train", ".", cwd=tmp_path)
    line = assert_one_line_error(proc, code=2, starts="splatfield: error: ")
    assert "transforms_train.json" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "raster", "--backend", "foo"],
        ["bench", "raster", "--stats", "bogus"],
        ["bench", "raster", "--sh-degree", "4"],
        ["bench", "raster", "--scene", "x.bin", "--gaussians", "5"],
        ["bench", "raster", "--width", "wide"],
        ["bench"],
        ["frobnicate"],
    ],
)
def test_bad_options_are_rejected_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse(argv)
    assert exc.value.code == 2


def test_invalid_literal_exits_2_in_a_subprocess(tmp_path):
    proc = run_cli("bench", "raster", "--backend", "foo", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "foo" in proc.stderr
    assert proc.stdout == ""  # rejected before anything ran


def test_option_out_of_range_is_one_line(tmp_path):
    proc = run_cli("bench", "raster", "--gaussians", "10", "--width", "0", cwd=tmp_path)
    assert_one_line_error(proc, code=2, starts="splatfield: error: --width: ")


def test_unavailable_native_backend_is_one_line_exit_1(monkeypatch, capsys):
    import splatfield.render

    def unavailable(backend, device):
        raise RuntimeError("native rasterizer unavailable: no compiler")

    monkeypatch.setattr(splatfield.render, "resolve_backend", unavailable)
    code = cli.run(["bench", "raster", "--gaussians", "10", "--width", "8", "--height", "8", "--backend", "native"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["splatfield: error: native rasterizer unavailable: no compiler"]


# ----------------------------------------------------------------------------- scene files


def test_truncated_scene_exits_2_with_one_line(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(np.zeros((3, 14), "<f4").tobytes()[:-5])  # 3 rows less 5 bytes
    proc = run_cli("bench", "raster", "--scene", str(path), cwd=tmp_path)
    line = assert_one_line_error(proc, code=2, starts=f"splatfield: error: {path}: ")
    assert "not a multiple of 56" in line


def test_missing_scene_exits_2_with_one_line(tmp_path):
    path = tmp_path / "absent.bin"
    proc = run_cli("bench", "raster", "--scene", str(path), cwd=tmp_path)
    line = assert_one_line_error(proc, code=2, starts=f"splatfield: error: {path}: ")
    assert "no such file" in line


def test_scene_with_bad_values_is_an_input_error(tmp_path):
    rows = np.zeros((4, 14), "<f4")
    rows[:, 6] = 1.0  # identity rotation
    rows[:, 10] = 0.5
    rows[2, 10] = 1.5  # not a probability
    path = tmp_path / "bad.bin"
    rows.tofile(path)
    with pytest.raises(scene_io.InputError, match=r"row 2: opacity 1.5"):
        scene_io.read_bench_scene(path)
    rows[2, 10] = 0.5
    rows[1, 4] = np.nan
    rows.tofile(path)
    with pytest.raises(scene_io.InputError, match=r"row 1: log_scale1 is not finite"):
        scene_io.read_bench_scene(path)


def test_read_bench_scene_maps_the_columns(tmp_path):
    gen = np.random.default_rng(3)
    rows = np.concatenate(
        [gen.uniform(-1, 1, (5, 3)), gen.uniform(-5, -3, (5, 3)), gen.normal(size=(5, 4)),
         gen.uniform(0.1, 0.9, (5, 1)), gen.uniform(0, 1, (5, 3))], 1,
    ).astype("<f4")  # fmt: skip
    path = tmp_path / "five.bin"
    rows.tofile(path)
    g = scene_io.read_bench_scene(path)
    t = torch.from_numpy(rows)
    assert len(g) == 5 and g.means.dtype == torch.float32
    assert torch.equal(g.means, t[:, 0:3])
    assert torch.equal(g.log_scales, t[:, 3:6])  # bit for bit
    assert torch.equal(g.quats, t[:, 6:10])
    torch.testing.assert_close(torch.sigmoid(g.opacity_logits), t[:, 10])
    torch.testing.assert_close(0.5 + 0.28209479177387814 * g.sh0[:, 0], t[:, 11:14])
    assert g.shN.shape == (5, 0, 3)


def test_bench_camera_is_the_readme_camera():
    cam = scene_io.bench_camera(400, 400)
    assert (cam.width, cam.height) == (400, 400)
    torch.testing.assert_close(cam.Ks[0], torch.tensor([346.41016, 346.41016, 200.0, 200.0]))
    assert torch.equal(cam.world_to_camera[0], torch.eye(4))
    cam = scene_io.bench_camera(64, 48)
    t = math.tan(math.radians(30))
    torch.testing.assert_close(cam.Ks[0], torch.tensor([32 / t, 24 / t, 32.0, 24.0]))


def test_random_scene_is_seeded_and_inside_the_frustum():
    cam = scene_io.bench_camera(80, 60)
    a = scene_io.random_bench_gaussians(4000, cam, seed=5)
    b = scene_io.random_bench_gaussians(4000, cam, seed=5)
    c = scene_io.random_bench_gaussians(4000, cam, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    assert not torch.equal(a.means, c.means)
    z = a.means[:, 2]
    assert z.min() >= 2 and z.max() <= 6 and z.max() - z.min() > 3.9
    fx, fy, cx, cy = cam.Ks[0].tolist()
    u = fx * a.means[:, 0] / z + cx
    v = fy * a.means[:, 1] / z + cy
    assert u.min() >= 0 and u.max() <= 80 and v.min() >= 0 and v.max() <= 60
    assert u.min() < 1 and u.max() > 79  # uniform across the whole frustum
    s = a.log_scales
    assert s.min() >= math.log(0.005) - 1e-6 and s.max() <= math.log(0.05) + 1e-6
    o = torch.sigmoid(a.opacity_logits)
    assert o.min() >= 0.1 - 1e-6 and o.max() <= 0.9 + 1e-6
    rgb = 0.5 + 0.28209479177387814 * a.sh0[:, 0]
    assert rgb.min() >= -1e-6 and rgb.max() <= 1 + 1e-6
    # uniform rotations: E[w^2] = 1/4 for each component of a uniform unit quaternion
    torch.testing.assert_close(a.quats.square().mean(0), torch.full((4,), 0.25), atol=0.02, rtol=0)


# ----------------------------------------------------------------------------- pair counting


def brute_force_pairs(means2d, conics, opacities, radii, width, height) -> int:
    """Dense: every visible Gaussian at every pixel centre, d^T C d <= 2 ln(255 o), float64."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    vis = (radii > 0).all(-1)
    m, (a, b, c), o = means2d[vis], conics[vis].unbind(-1), opacities[vis]
    dx = xs.reshape(-1, 1) - m[:, 0]
    dy = ys.reshape(-1, 1) - m[:, 1]
    q = a * dx * dx + 2 * b * dx * dy + c * dy * dy
    return int((q <= 2 * torch.log(255 * o)).sum())


def small_scene(n: int, seed: int) -> tuple[Gaussians, Cameras]:
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    z = 1 + 5 * torch.rand(n, generator=gen, dtype=f64)
    z[:5] = -1.0  # behind the camera: not rendered
    xy = (torch.rand(n, 2, generator=gen, dtype=f64) * 2 - 1) * 0.9 * z[:, None]  # some off-screen
    means = torch.cat([xy, z[:, None]], 1)
    scales = torch.exp(torch.empty(n, 3, dtype=f64).uniform_(math.log(0.01), math.log(0.4), generator=gen))
    quats = torch.randn(n, 4, generator=gen, dtype=f64)
    opac = torch.empty(n, dtype=f64).uniform_(0.005, 0.99, generator=gen)  # a few below 1/255
    rgb = torch.rand(n, 3, generator=gen, dtype=f64)
    cam = scene_io.bench_camera(37, 29, dtype=f64)
    return Gaussians.from_rgb(means, scales, quats, opac, rgb), cam


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_count_equals_brute_force(seed):
    g, cam = small_scene(300, seed)
    means2d, conics, opacities, _, _, radii = reference.project(
        g.means, g.quats, g.log_scales, g.opacity_logits, g.sh, cam.world_to_camera, cam.Ks,
        cam.width, cam.height, 0, bench.NEAR_PLANE, bench.FAR_PLANE, bench.EPS2D, False,
    )  # fmt: skip
    args = (means2d[0], conics[0], opacities[0], radii[0], cam.width, cam.height)
    expected = brute_force_pairs(*args)
    assert expected > 1000  # the test scene is not trivial
    assert 0 < int((radii[0] > 0).all(-1).sum()) < 300  # and some Gaussians are culled
    assert bench.count_footprint_pairs(*args) == expected
    assert bench.count_footprint_pairs(*args, max_rows=1) == expected  # many tiny chunks
    # the wrapper used by the benchmark (visibility and centres from a render)
    assert bench.footprint_pairs(g, cam, radii, means2d, sh_degree=0) == expected


def test_pair_count_of_a_single_gaussian():
    # isotropic: C = I / s^2, o = 1 -> d^T d <= 2 s^2 ln 255, a disc of radius r
    s, W = 2.0, 41
    r2 = 2 * s * s * math.log(255.0)
    means2d = torch.tensor([[20.5, 20.5]], dtype=torch.float64)
    conics = torch.tensor([[1 / s**2, 0.0, 1 / s**2]], dtype=torch.float64)
    opac = torch.tensor([1.0], dtype=torch.float64)
    radii = torch.tensor([[10, 10]], dtype=torch.int32)
    disc = sum(1 for x in range(-20, 21) for y in range(-20, 21) if x * x + y * y <= r2)
    assert bench.count_footprint_pairs(means2d, conics, opac, radii, W, W) == disc
    # half of it off the left edge (centre on the pixel boundary x = 0)
    left = bench.count_footprint_pairs(torch.tensor([[0.0, 20.5]], dtype=torch.float64), conics, opac, radii, W, W)
    half = sum(1 for x in range(0, 21) for y in range(-20, 21) if (x + 0.5) ** 2 + y * y <= r2)
    assert left == half
    assert bench.count_footprint_pairs(means2d, conics, opac, torch.zeros_like(radii), W, W) == 0


# ----------------------------------------------------------------------------- bench raster


# The bench tests time the native kernels: the `native` fixture, never a silent switch to the reference.


def test_bench_raster_writes_json(tmp_path, native):
    out = tmp_path / "bench.json"
    proc = run_cli(
        "bench", "raster", "--gaussians", "2000", "--width", "64", "--height", "48", "--repeats", "2",
        "--warmup", "1", "--backend", "native", "--json", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(out.read_text())
    assert set(data) == REQUIRED_KEYS | EXTRA_KEYS
    assert data["backend"] == "native"
    assert (data["gaussians"], data["width"], data["height"], data["repeats"]) == (2000, 64, 48, 2)
    assert data["forward_ms"] > 0 and data["backward_ms"] > 0
    assert data["total_ms"] >= max(data["forward_ms"], data["backward_ms"])
    assert data["pairs_per_s"] > 0
    assert 10 < data["peak_rss_mb"] < 64 * 1024
    assert data["threads"] >= 1
    assert data["stats"] == [] and data["scene"] == "random (seed 0)"
    assert data["torch"] == torch.__version__
    assert data["cpu"]["logical_cores"] == os.cpu_count() and data["cpu"]["model"]
    # the table: a row for the backend, the definition of pairs
    assert re.search(r"^native\s+1\+2\s", proc.stdout, re.M), proc.stdout
    assert "alpha >= 1/255" in proc.stdout
    assert not list(tmp_path.glob(".bench.json.*"))  # no temporary file left behind


def test_bench_raster_compare_stats(tmp_path, native):
    out = tmp_path / "ab.json"
    proc = run_cli("bench", "raster", "--gaussians", "500", "--width", "32", "--height", "32", "--repeats", "2",
                   "--warmup", "0", "--stats", "split2d", "--compare-stats", "--json", str(out), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ab = json.loads(out.read_text())["stats_overhead"]
    assert ab["stats"] == ["split2d"] and ab["repeats"] == 2
    for k in ("without_forward_ms", "without_backward_ms", "with_forward_ms", "with_backward_ms"):
        assert ab[k] > 0
    assert ab["total_overhead"] == pytest.approx(
        (ab["with_forward_ms"] + ab["with_backward_ms"]) / (ab["without_forward_ms"] + ab["without_backward_ms"]) - 1)
    assert "statistics overhead" in proc.stdout
    refused = run_cli("bench", "raster", "--gaussians", "5", "--compare-stats", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "splatfield: error: --compare-stats: name the statistics to compare with --stats")


def test_time_raster_pairs_match_the_projection(native):
    cam = scene_io.bench_camera(40, 30)
    g = scene_io.random_bench_gaussians(500, cam, seed=2)
    r = bench.time_raster(g, cam, "native", repeats=1, warmup=0, stats=("importance",))
    gd, cd = g.to(dtype=torch.float64), cam.to(dtype=torch.float64)
    m2, con, op, _, _, rad = reference.project(
        gd.means, gd.quats, gd.log_scales, gd.opacity_logits, gd.sh, cd.world_to_camera, cd.Ks, 40, 30, 0,
        bench.NEAR_PLANE, bench.FAR_PLANE, bench.EPS2D, False,
    )  # fmt: skip
    assert r.pairs == brute_force_pairs(m2[0], con[0], op[0], rad[0], 40, 30)
    assert r.pairs_per_s == pytest.approx(r.pairs / (r.forward_ms / 1e3))
    assert r.visible == 500 and r.stats == ["importance"]


def test_results_json_for_several_backends():
    def result(backend, f, b):
        return bench.RasterBenchResult(
            backend=backend, forward_ms=f, backward_ms=b, total_ms=f + b, pairs_per_s=1.0, pairs=1, visible=1,
            peak_rss_mb=1.0, threads=1, gaussians=1, width=1, height=1, repeats=1, warmup=0, stats=[], scene="s",
            cpu={}, torch="t",
        )  # fmt: skip

    one = bench.results_json([result("native", 1.0, 2.0)])
    assert set(one) == REQUIRED_KEYS | EXTRA_KEYS
    both = bench.results_json([result("native", 1.0, 2.0), result("reference", 10.0, 30.0)])
    assert set(both) == {"results", "ratios"}
    assert [r["backend"] for r in both["results"]] == ["native", "reference"]
    assert both["ratios"] == pytest.approx({"forward": 10.0, "backward": 15.0, "total": 40.0 / 3.0})


def test_write_json_atomic(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("old")
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_ctrl_c_exits_130_with_one_line(tmp_path, native):
    proc = subprocess.Popen(
        [sys.executable, "-m", "splatfield.apps.cli", "bench", "raster", "--gaussians", "500", "--width", "32",
         "--height", "32", "--repeats", "1000000", "--backend", "native"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # wait until the timing loop runs (the table header is printed)
            if line.startswith("backend") or time.monotonic() > deadline:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["splatfield: interrupted"]


# ----------------------------------------------------------------------------- demo


def test_demo_trains_and_renders_an_orbit(tmp_path, native):
    from PIL import Image

    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", str(out), "--size", "48", "--steps", "150", "--frames", "2", cwd=tmp_path,
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"test views: 8 at 48x48 — PSNR ([0-9.]+) dB", proc.stdout)
    assert m, proc.stdout
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert float(m.group(1)) == pytest.approx(metrics["psnr"], abs=1e-3)
    # 150 steps already beat the white-background-only PSNR of this scene (~9 dB)
    assert metrics["psnr"] > 15.0
    frames = sorted((out / "frames").glob("frame_*.png"))
    assert [f.name for f in frames] == ["frame_000.png", "frame_001.png"]
    first = np.asarray(Image.open(frames[0]))
    assert first.shape == (256, 256, 3) and first.std() > 10
    assert (out / "contact_sheet.png").is_file() and (out / "run" / "scene.ply").is_file()
    assert f"contact sheet: {out / 'contact_sheet.png'}" in proc.stdout
