"""Chamfer distance and F-score of an exported mesh against the demo scene's visible surface."""
import sys
from pathlib import Path
import open3d as o3d
from splatfield.data import procedural
from splatfield.scenes import mesh as sm
from splatfield.scenes.run import Run
run, mesh_path = Path(sys.argv[1]), Path(sys.argv[2])
truth = procedural.visible_surface(Path(Run.open(run).config.data))  # 256x256 rays per training view, 0.005 grid
pred = sm.sample_surface(o3d.io.read_triangle_mesh(str(mesh_path)), 300_000)
for tau in (0.01, 0.02, 0.05):
    d = sm.surface_distance(pred, truth, tau)
    print(f"tau {tau}: chamfer {d.chamfer:.4f} (accuracy {d.accuracy:.4f}, completeness {d.completeness:.4f}) "
          f"precision {d.precision:.3f} recall {d.recall:.3f} F {d.fscore:.3f}; {d.truth} truth points")
