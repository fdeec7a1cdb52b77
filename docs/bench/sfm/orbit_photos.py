"""A large photo folder of one scene, with its true poses: hand-held rings around the
procedural tabletop (splatfield.data.procedural), for `docs/BENCHMARKS.md` "SfM on large folders".

Usage: python docs/bench/sfm/orbit_photos.py OUT [--count 300] [--size 512] [--every K] [--shuffle SEED]

Writes OUT/images/IMG_0001.jpg ... in capture order (three rings at 20, 35 and 50 degrees
elevation, 2.6-3.2 units from the centre, the aim and the roll jittered by hand) and
OUT/transforms.json (their OpenGL camera-to-world poses, the reference for `splatfield bench
sfm --reference`). --every K keeps every K-th photo of the walk (same poses, same names);
--shuffle SEED names the photos P_<6 random digits>.jpg, so that their names say nothing
of the order. Deterministic for a given --seed.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from splatfield.data import procedural as pr

RINGS_DEG = (20.0, 35.0, 50.0)
GREY = 0.5  # background: featureless, like a studio wall


def poses(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """OpenGL camera-to-world matrices, in the order a person walking the rings takes them."""
    out = []
    per_ring = [count // len(RINGS_DEG) + (r < count % len(RINGS_DEG)) for r in range(len(RINGS_DEG))]
    for ring, n in zip(RINGS_DEG, per_ring):
        start = rng.uniform(0, 2 * math.pi)
        for i in range(n):
            az = start + 2 * math.pi * i / n + rng.normal(0, 0.01)
            el = math.radians(ring + rng.normal(0, 2.0))
            dist = rng.uniform(2.6, 3.2)
            eye = dist / pr.RADIUS * pr._on_sphere(el, az)
            c2w = pr.look_at_c2w(eye, target=rng.normal(0, 0.05, 3))
            roll = math.radians(rng.normal(0, 2.0))  # about the optical axis (local z)
            c, s = math.cos(roll), math.sin(roll)
            c2w[:3, :2] = c2w[:3, :2] @ np.array([[c, s], [-s, c]])
            out.append(c2w)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED")
    a = ap.parse_args()
    c2ws = poses(a.count, np.random.default_rng(a.seed))
    names = [f"IMG_{i + 1:04d}.jpg" for i in range(a.count)]
    if a.shuffle is not None:
        names = [f"P_{k:06d}.jpg" for k in np.random.default_rng(a.shuffle).choice(10**6, a.count, replace=False)]
    kept = list(zip(names, c2ws))[:: a.every]
    (a.out / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (name, c2w) in enumerate(kept):
        rgba = pr.render_view(c2w, a.size, samples=2)
        rgb = rgba[..., :3] * rgba[..., 3:] + GREY * (1 - rgba[..., 3:])
        Image.fromarray((rgb * 255 + 0.5).clip(0, 255).astype(np.uint8)).save(a.out / "images" / name, quality=92)
        frames.append({"file_path": f"images/{name}", "transform_matrix": c2w.tolist()})
        if (i + 1) % 25 == 0:
            print(f"{i + 1}/{len(kept)}", flush=True)
    doc = {"camera_angle_x": pr.CAMERA_ANGLE_X, "frames": frames}
    (a.out / "transforms.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
