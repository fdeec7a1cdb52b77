"""Batches of views and data-parallel training: a batch's statistics count views as one view
at a time would; two processes with one view each end bit-identical to one process with a
batch of two; a killed process stops the other with one line and a checkpoint that resumes
(also with another number of processes); the device option is checked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from splatfield.apps import cli
from splatfield.apps.run_data import load_dataset, load_views
from splatfield.apps.training import new_trainer
from splatfield.data import procedural
from splatfield.render.device import DeviceError, resolve_device
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.options import run_config
from splatfield.scenes.strategies.adc import ADC

from .conftest import ctrl_c_works

COMMON = ["--no-viewer", "--init-points", "1500", "--init-half-size", "1.0", "--sh-degree", "1", "--checkpoint-every", "0",
          "--no-save-renders", "--adc.refine-start", "40", "--adc.refine-every", "40", "--adc.reset-every", "90"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return procedural.write_demo_dataset(tmp_path_factory.mktemp("pdata") / "d", size=32, train_views=12, test_views=3)


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatfield.apps.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_a_batch_counts_each_view_as_a_step_of_one_view_would(data, native):
    """The mean loss of B views scales each view's gradient by 1/B; the statistics undo it, so
    adc's average gradient (the densification decision) means the same at any batch size."""
    config = run_config(str(data), steps=100, init_points=1500, init_half_size=1.0, sh_degree=1)
    dataset = load_dataset(config)
    views = load_views(dataset.train)
    scene = new_trainer(config, dataset, views).scene
    bg = torch.ones(3)

    def accumulate(picks: list[int]) -> ADC:
        adc = ADC(steps=100)
        cams = views.cameras[torch.tensor(picks)]
        out = scene.render(cams, background=bg, stats=adc.statistics)
        target = views.images[torch.tensor(picks)].float() / 255
        ((out.image - target).abs().mean(dim=(1, 2, 3)).sum() / len(picks)).backward()  # the batch's mean loss
        scene.optimizer.zero_grad(set_to_none=True)
        adc.after_backward(1, scene, out)
        return adc

    one, two, both = accumulate([0]), accumulate([5]), accumulate([0, 5])
    assert torch.equal(both.count, one.count + two.count) and int(both.count.max()) == 2
    seen = both.grad_sum > 0
    assert seen.sum() > 100
    torch.testing.assert_close(both.grad_sum, one.grad_sum + two.grad_sum, rtol=1e-5, atol=1e-12)


def test_two_processes_end_bit_identical_to_one_with_the_same_batch(data, tmp_path, native):
    """Same draws everywhere; each process renders its view; gradients summed over processes in
    rank (= view) order, statistics gathered in view order: the same bits as one process that
    renders both views in one batch (the rasterizer's backward also sums over the views in order)."""
    args = ["train", str(data), "--steps", "200", "--batch-size", "2", *COMMON]
    one = _cli(*args, "--out", "one", "--threads", "1", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    t0 = time.perf_counter()
    two = _cli(*args, "--out", "two", "--nproc", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "splatfield train: 2 processes" in two.stdout and time.perf_counter() - t0 < 300
    log_one = (tmp_path / "one" / "refinements.jsonl").read_text()
    assert len(log_one.splitlines()) >= 2  # densification happened (steps 40, 80, 120)
    assert (tmp_path / "two" / "refinements.jsonl").read_text() == log_one
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "one" / "checkpoints"))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "two" / "checkpoints"))
    for name, p in a["scene"]["params"].items():
        assert torch.equal(p, b["scene"]["params"][name]), name
    for sa, sb in zip(a["strategies"], b["strategies"]):
        for k, v in sa["state"].items():
            assert v is None or torch.equal(v, sb["state"][k]), k
    ma, mb = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert ma["psnr"] == mb["psnr"] and ma["num_gaussians"] == mb["num_gaussians"]


def test_a_killed_process_stops_the_other_with_a_checkpoint_that_resumes(data, tmp_path, native):
    proc = subprocess.Popen([sys.executable, "-m", "splatfield.apps.cli", "train", str(data), "--out", "run", "--steps",
                             "100000", "--batch-size", "2", "--nproc", "2", "--dist-timeout", "20", *COMMON],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_works)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # training has started in both processes
        if line.startswith("step ") or line.startswith("run:"):
            break
    time.sleep(3)
    victim = _process_of_rank(1, proc.pid)
    os.kill(victim, signal.SIGKILL)
    t_kill = time.perf_counter()
    out, err = proc.communicate(timeout=120)
    assert time.perf_counter() - t_kill < 25  # within the --dist-timeout (a reset connection is seen at once)
    assert proc.returncode == 1
    lost = [ln for ln in out.splitlines() if "another process was lost" in ln]
    assert len(lost) == 1 and lost[0].startswith("stopped at step ")
    assert err.strip().splitlines()[-1] == "splatfield: error: --nproc: process 1 ended with signal 9; the others were stopped"
    assert "Traceback" not in err
    step = int(lost[0].split()[3].rstrip(":"))
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))["step"] == step
    # resumable, here by one process with the same batch
    done = _cli("train", "--resume", "run", "--steps", str(step + 3), "--no-viewer", "--no-eval", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resumed run at step {step}" in done.stdout


def _process_of_rank(rank: int, launcher: int) -> int:
    """The worker of ``rank`` started (through the elastic agent) by the process ``launcher``;
    only its descendants count, so no other test's or user's process is taken for it."""
    for _ in range(100):
        parent = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                parent[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
        for pid in parent:
            p = pid
            while p in parent and p != launcher:
                p = parent[p]
            if p != launcher or pid == launcher:
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if f"RANK={rank}".encode() in env and b"splatfield.apps.cli" in cmd:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank} under {launcher}")


def test_batch_and_process_counts_are_checked(capsys):
    assert cli.run(["train", "d", "--batch-size", "3", "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "splatfield: error: --batch-size: must be a multiple of --nproc (each process renders its share): 3 views over 2 processes"
    assert cli.run(["train", "d", "--batch-size", "0"]) == 2
    assert "--batch-size: must be >= 1" in capsys.readouterr().err


def test_device_option(capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"--device cuda:1: torch .* sees no CUDA device"):
            resolve_device("cuda:1")
        assert cli.run(["bench", "raster", "--gaussians", "10", "--device", "cuda"]) == 2
        assert "sees no CUDA device" in capsys.readouterr().err
    assert cli.run(["eval", "r", "--device", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == "splatfield: error: --device: 'gpu' is not auto, cpu, cuda or cuda:N"


def test_render_split_shares_the_views_among_processes(small_run, tmp_path, native):
    one = _cli("render", str(small_run), "--split", "test", "--out", str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                          "splatfield.apps.cli", "render", str(small_run), "--split", "test", "--out", str(tmp_path / "two")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a == b  # the same rows in view order and the same means
    assert sorted(p.name for p in (tmp_path / "one").glob("*.png")) == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
