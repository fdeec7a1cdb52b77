"""Time per training step of each per-view correction, side by side (issue 19's cost table).

    python docs/bench/camera_opt/option_costs.py DATA --downscale 4 --steps 60 --warmup 20 > costs.json

One trainer per setting (none, --camera-opt pose, pose+intrinsics, --appearance affine,
bilateral), each built as `splatfield train` builds it from the same seed, stepped in turn
(one step of each, round and round) so that whatever else the machine does falls on all of
them alike; median step times and their ratios to none. Threads: torch's setting (pass
--threads).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from splatfield.apps.bench.train_timing import start_training
from splatfield.apps.machine import machine_info
from splatfield.scenes.options import CorrectionConfig

SETTINGS = {
    "none": CorrectionConfig(),
    "pose": CorrectionConfig(camera_opt="pose"),
    "pose+intrinsics": CorrectionConfig(camera_opt="pose+intrinsics"),
    "affine": CorrectionConfig(appearance="affine"),
    "bilateral": CorrectionConfig(appearance="bilateral"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--downscale", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    trainers = {name: start_training(a.data, downscale=a.downscale, steps=7000, init_points=100_000,
                                     init_half_size=None, corrections=c)[0] for name, c in SETTINGS.items()}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for k in range(a.warmup + a.steps):
        for name, tr in trainers.items():
            dt = tr.train_step().step_seconds * 1e3
            if k >= a.warmup:
                times[name].append(dt)
    base = statistics.median(times["none"])
    first = next(iter(trainers.values())).views.cameras
    print(json.dumps({
        "data": a.data, "downscale": a.downscale, "size": [first.width, first.height], "steps": a.steps,
        "warmup": a.warmup, "threads": a.threads, "cpu": machine_info(), "torch": torch.__version__,
        "median_ms": {n: statistics.median(t) for n, t in times.items()},
        "ratio_to_none": {n: statistics.median(t) / base for n, t in times.items()},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
