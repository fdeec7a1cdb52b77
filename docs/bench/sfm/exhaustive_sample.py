"""Per-pair cost of exhaustive matching on a large folder, from a random sample of its pairs:
SfM's own features, matching and verification (one thread), timed per stage, extrapolated
to every pair (for `docs/BENCHMARKS.md` "SfM on large folders", where the full exhaustive
run would take hours).

Usage: python docs/bench/sfm/exhaustive_sample.py IMAGES PAIRS OUT.json
"""
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pycolmap
import torch

from splatfield.data import sfm
from splatfield.data.sfm_inputs import image_files, prepare_images
from splatfield.data.sfm_pairs import exhaustive_pairs

torch.set_num_threads(1)  # SfM's thread budget: one thread
src, sample_n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
work = Path(tempfile.mkdtemp(prefix="splatfield-sample-"))
run = sfm._Run(src, "images", work, sfm.SfmOptions(), print, lambda name, total: (lambda n: None))
(work / "images").mkdir(parents=True)
run.work.mkdir(parents=True)
files, _ = image_files(src)
prep = prepare_images(files, work / "images", work / "masks", run.work / "images", run.work / "masks", max_size=1600)
sfm._quiet_colmap(run.work / "colmap.log.")
sfm._features(run, prep, 1)
names = [prep.sfm_names[n] for n in prep.names]
every = exhaustive_pairs(len(names))
random.seed(0)
pairs = [(names[i], names[j]) for i, j in sorted(random.sample(every, sample_n))]
sfm._match(run, pairs, 1, verify=False)
sfm._match(run, pairs, 1, verify=True)
with pycolmap.Database.open(str(run.database)) as db:
    verified = sum(len(g.inlier_matches) > 0 for g in db.read_two_view_geometries()[1])
doc = {"images": len(names), "exhaustive_pairs": len(every), "sampled_pairs": sample_n, "verified_in_sample": verified,
       "seconds": {k: round(v, 2) for k, v in run.seconds.items()},
       "seconds_per_pair": {k: run.seconds[k] / sample_n for k in ("matching", "verification")}}
doc["extrapolated_seconds"] = {k: round(v * len(every)) for k, v in doc["seconds_per_pair"].items()}
out.write_text(json.dumps(doc, indent=2))
print(json.dumps(doc, indent=2))
shutil.rmtree(work, ignore_errors=True)
