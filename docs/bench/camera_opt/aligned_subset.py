"""A run's test PSNR as given and after test-time alignment, on every k-th test view (issue 19).

    python docs/bench/camera_opt/aligned_subset.py RUN --every 20 --align-steps 30 > aligned.json

The same evaluation as `splatfield eval RUN --align-steps N` (scenes.evaluate.align_cameras
from the run's test cameras in its refined frame, with its refined intrinsics), on a subset
of the test views: aligning every one of lego's 200 test views costs N renders and
gradients each. Also reports the test cameras moved by the change of frame alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from splatfield.apps.run_data import background_of, load_dataset, with_refined_cameras
from splatfield.apps.machine import machine_info
from splatfield.scenes.evaluate import align_cameras, evaluate
from splatfield.scenes.run import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--align-steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pivot", choices=("scene", "camera"), default="scene", help="the alignment's turns (as training's --camera-pivot)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = Run.open(a.run)
    scene, _ = run.scene_and_elastic()
    ds = load_dataset(run.config)
    pick = torch.arange(0, len(ds.test), a.every)
    image = lambda i: ds.test.image(int(pick[i]))  # noqa: E731
    bg = background_of(ds)
    out = {"run": str(a.run), "views": pick.tolist(), "align_steps": a.align_steps, "pivot": a.pivot,
           "cpu": machine_info()["model"]}  # fmt: skip
    given = ds.test.cameras[pick].to(dtype=torch.float32)
    start = with_refined_cameras(ds, a.run).test.cameras[pick].to(dtype=torch.float32)
    out["as_given"] = evaluate(scene, given, image, background=bg, use_lpips=False).psnr
    out["frame_change"] = evaluate(scene, start, image, background=bg, use_lpips=False).psnr
    t0 = time.perf_counter()
    aligned = align_cameras(scene, start, image, extent=ds.scene_extent(), steps=a.align_steps, background=bg, pivot=a.pivot)
    out["align_seconds_per_view"] = (time.perf_counter() - t0) / len(pick)
    res = evaluate(scene, aligned, image, background=bg, use_lpips=False)
    out["aligned"] = res.psnr
    out["aligned_ssim"] = res.ssim
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
