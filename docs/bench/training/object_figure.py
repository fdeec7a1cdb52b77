"""The picture of an object-capture run (issue 19, maryrose): for some test views, the ground
truth the metrics score against (image · mask + background · (1 − mask)), the render, and
the rendered alpha with what lies outside the test mask (floaters) in red.

    python docs/bench/training/object_figure.py RUN [RUN2 ...] --views 3 4 8 --out docs/bench/training/maryrose.png

Each extra run adds its own render and alpha columns (e.g. with and without --appearance).
The views are the runs' test views as ``metrics.json`` lists them; each run's PSNR and alpha
outside the mask are printed over its tiles, read from that run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from splatfield.apps.run_data import background_of, load_dataset
from splatfield.scenes.run import Run, scene_from_state_dict


def alpha_tile(alpha: np.ndarray, silhouette: np.ndarray) -> np.ndarray:
    """Grey alpha inside the mask; red alpha outside it, where a clean object has none."""
    outside = silhouette < 128
    tile = np.repeat(alpha[..., None], 3, axis=-1)
    tile[outside, 1:] = 0.0
    return tile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--views", type=int, nargs="+", required=True, help="test view indices")
    ap.add_argument("--names", nargs="*", default=None, help="a label per run (default: folder names)")
    ap.add_argument("--size", type=int, default=256, help="tile height in pixels")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    names = a.names or [r.name for r in a.runs]
    if len(names) != len(a.runs):
        raise SystemExit("object_figure: give one --names label per run")
    runs = [Run.open(r) for r in a.runs]
    dataset = load_dataset(runs[0].config)
    split, bg = dataset.test, background_of(dataset)
    per_run = []
    for run in runs:
        state, _ = run.load_state()
        scene = scene_from_state_dict(state["scene"], torch.device("cpu"))
        metrics = json.loads((run.path / "metrics.json").read_text())["per_view"]
        per_run.append((scene, metrics))
    gap = np.ones((split.cameras.height, 6, 3), dtype=np.float32)
    rows, labels = [], []
    for i in a.views:
        sil = split.silhouette(i)
        if sil is None:
            raise SystemExit(f"object_figure: test view {i} has no object mask (not an object capture?)")
        tiles = [split.image(i).numpy().astype(np.float32) / 255.0, gap]
        text = ["truth"]
        for (scene, metrics), name in zip(per_run, names):
            with torch.no_grad():
                out = scene.render(split.cameras[i : i + 1].to(dtype=torch.float32), background=bg)
            tiles += [out.image[0].clamp(0, 1).numpy(), alpha_tile(out.alpha[0, ..., 0].clamp(0, 1).numpy(), sil.numpy()), gap]
            m = metrics[i]
            text += [f"{name}: {m['psnr']:.1f} dB", f"alpha out {m.get('alpha_outside', float('nan')):.3f}"]
        rows.append(np.concatenate(tiles[:-1], 1))
        labels.append(text)
    h, w = split.cameras.height, split.cameras.width
    scale = a.size / h
    label_h = 16
    canvas = Image.new("RGB", (int(rows[0].shape[1] * scale), len(rows) * (a.size + label_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, text) in enumerate(zip(rows, labels)):
        img = Image.fromarray((np.clip(row, 0, 1) * 255 + 0.5).astype(np.uint8))
        img = img.resize((canvas.width, a.size), Image.BILINEAR)
        y = r * (a.size + label_h)
        canvas.paste(img, (0, y + label_h))
        xs = [0] + [int((w + 6 + k * (w + w + 6) + j * w) * scale) for k in range(len(runs)) for j in (0, 1)]
        first = f"{Path(split.image_paths[a.views[r]]).stem}  {text[0]}"
        for x, t in zip(xs, [first] + text[1:]):
            draw.text((x + 3, y + 2), t, fill="black")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
