"""Pictures of exported meshes for the docs: each mesh ray cast (open3d's RaycastingScene, on
the CPU) from a test camera of its run, side by side, with the run's own render on the left.

    python docs/bench/mesh/picture.py RUN OUT.png MESH.ply [MESH.ply ...] [--view K] [--max-triangles T] [--scale S]

``--max-triangles T`` adds the first mesh decimated to T triangles (as ``export --max-triangles``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from PIL import Image, ImageDraw

from splatfield.apps.sources import open_source
from splatfield.scenes import mesh as sm

parser = argparse.ArgumentParser()
parser.add_argument("run", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("meshes", type=Path, nargs="+")
parser.add_argument("--view", type=int, default=0)
parser.add_argument("--max-triangles", type=int)
parser.add_argument("--scale", type=float, default=1.0, help="picture size / the camera's image size")
args = parser.parse_args()

src = open_source(args.run)
cam = src.dataset.test.cameras.to(dtype=torch.float32)[args.view].scale(args.scale)
with torch.no_grad():
    render = src.scene.render(cam, background=src.background).image[0].clamp(0, 1).numpy()
panels = [("splats (render)", (render * 255 + 0.5).astype(np.uint8))]
meshes = [(p.name, o3d.io.read_triangle_mesh(str(p))) for p in args.meshes]
if args.max_triangles:
    first = o3d.io.read_triangle_mesh(str(args.meshes[0]))
    meshes.append((f"decimated to {args.max_triangles:,}", sm.decimate(first, args.max_triangles)))
for name, mesh in meshes:
    panels.append((f"{name}: {len(mesh.triangles):,} triangles", sm.picture(mesh, cam, background=src.background)))
H, W = panels[0][1].shape[:2]
sheet = Image.new("RGB", (W * len(panels), H + 18), "white")
draw = ImageDraw.Draw(sheet)
for k, (label, img) in enumerate(panels):
    sheet.paste(Image.fromarray(img), (k * W, 18))
    draw.text((k * W + 4, 3), label, fill=(0, 0, 0))
args.out.parent.mkdir(parents=True, exist_ok=True)
sheet.save(args.out, optimize=True)
print(f"wrote {args.out}")
