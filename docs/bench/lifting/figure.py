"""The picture of docs/LIFTING.md: for each held-out seed, its reference view, then novel
views (ground truth, then each lift given) side by side.

    python docs/bench/lifting/figure.py --runs none=runs/lift-none sds=runs/lift-sds --out docs/bench/lifting/heldout.png

Each ``NAME=FOLDER`` is a folder ``heldout.py --out`` wrote (``FOLDER/seed<k>/run``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from splatfield.data import arrangements as A
from splatfield.scenes.run import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, help="NAME=FOLDER from heldout.py --out")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(A.HELD_OUT))
    ap.add_argument("--elevation", type=float, default=15.0)
    ap.add_argument("--views", type=int, default=8, help="the bench's novel views ...")
    ap.add_argument("--show", type=int, nargs="*", default=[1, 2, 4, 5], help="... of which these are shown")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    runs = [r.split("=", 1) for r in a.runs]
    angles = [A.novel_view_angles(a.elevation, a.views)[k] for k in a.show]
    cams = A.as_cameras(angles, a.size)
    gap = np.ones((a.size, 4, 3), dtype=np.float32)
    rows = []
    for seed in a.seeds:
        tiles = [A.over_white(A.render(seed, A.camera(a.elevation, 0.0), a.size)), gap]
        groups = [list(A.views_over_white(seed, angles, a.size))]
        for _, folder in runs:
            scene = Run.open(Path(folder) / f"seed{seed}" / "run").scene()
            with torch.no_grad():
                got = scene.render(cams, background=(1.0, 1.0, 1.0)).image.clamp(0, 1).numpy()
            groups.append(list(got))
        for g in groups:
            tiles += g + [gap]
        rows.append(np.concatenate(tiles, 1))
    grid = np.concatenate(rows, 0)
    label_h = 14
    img = Image.fromarray((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8))
    img = img.resize((img.width * a.scale, img.height * a.scale), Image.NEAREST)
    canvas = Image.new("RGB", (img.width, img.height + label_h * a.scale), "white")
    canvas.paste(img, (0, label_h * a.scale))
    draw = ImageDraw.Draw(canvas)
    x = 0
    step = (a.size * len(angles) + 4) * a.scale
    draw.text((2, 2), "reference", fill="black")
    x = (a.size + 4) * a.scale
    for name in ["truth"] + [n for n, _ in runs]:
        draw.text((x + 2, 2), name, fill="black")
        x += step
    a.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
