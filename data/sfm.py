"""Structure from motion with pycolmap: a photo folder or a video -> a COLMAP capture.

Stages: frames (a video: the sharpest frame of each of ``frames`` windows), images (check,
rotate by EXIF, skip unreadable/duplicate files, one size; see :mod:`.sfm_inputs`; the
frames below half the median sharpness are reported as blurred, see :mod:`.sharpness`),
features (SIFT on copies at most ``max_size`` pixels long), matching of candidate image
pairs, their geometric verification (the pairs scale with the number of images: every pair
of up to 100 photos, each photo with its most similar ones past that, a video's frames in
sequence; see :mod:`.sfm_pairs`), incremental mapping, and writing.

Every stage reports its progress (counts, a total, the time left; :mod:`.sfm_progress`):
COLMAP is called on slices of the images or pairs, and mapping counts its registrations.

The output is a standard COLMAP capture that :func:`splatfield.data.load` reads::

    <out>/images/      the photos or frames at full size (EXIF rotation applied)
    <out>/masks/       <name>.png when the input had masks or an alpha channel
    <out>/sparse/0/    cameras, images, points3D (+ COLMAP 4's rigs, frames), .bin
    <out>/sfm.json     the summary (registered images, reprojection error, the matcher and why,
                       seconds per stage, each image's sharpness and the blurred ones)
    <out>/colmap/      database.db and COLMAP's own log (colmap.log.*)

The cameras keep COLMAP's distortion (SIMPLE_RADIAL, OPENCV, OPENCV_FISHEYE, ...): the
loader undistorts at load time. SfM runs on downscaled copies; the intrinsics are scaled
back to the full-size images afterwards (per axis: a one-focal model becomes its two-focal
counterpart when rounding made the two scales differ).

Default output: ``<cache root>/sfm/<hash>``, the hash covering the input files' names,
sizes and modification times and the options, so a second run on the same input reuses it.
Problems are :class:`SfmError` (a :class:`DatasetError`: one line naming the input); images
skipped or left unregistered are reported as warnings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from .dataset import DatasetError, cache_root
from .sfm_inputs import Prepared, image_files, photo_folder, prepare_images
from .sfm_pairs import (KMEANS_ITERATIONS, NUMBERED_OVERLAP, RETRIEVAL_NEIGHBOURS, WORDS, choose_matcher, chunks,
                        codebook_sample, exhaustive_pairs, global_descriptors, kmeans, pair_count, retrieval_pairs,
                        sequential_pairs, word_counts)  # fmt: skip
from .sfm_progress import EtaLines, Phase, capped, counting_files
from .sharpness import report_blurred
from .video_frames import VIDEO_SUFFIXES, extract_frames, is_video

SfmMatcher = Literal["auto", "exhaustive", "sequential", "retrieval"]
SfmCameraModel = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE"]
InputKind = Literal["images", "video"]
PIPELINE_VERSION = 2  # part of the cache key: bump when the output would change (2: auto picks retrieval past 100)
_LIST = 10  # names listed in one message before "and N more"
_PROGRESS_STEPS = 50  # calls into COLMAP per stage, at most (each costs ~0.1 s of setup)


class SfmError(DatasetError):
    """SfM cannot produce a usable capture from this input (one line, naming it)."""


@dataclass(frozen=True)
class SfmOptions:
    matcher: SfmMatcher = "auto"
    camera_model: SfmCameraModel = "SIMPLE_RADIAL"
    single_camera: bool = True  # one camera for all images of a size (a phone capture)
    frames: int = 150  # frames taken from a video
    max_size: int = 1600  # long side of the images SfM sees, in pixels
    min_registered: float = 0.5  # fail below this fraction of the images registered


@dataclass
class SfmResult:
    out: Path
    summary: dict[str, Any]
    reused: bool


def input_kind(path: str | os.PathLike[str]) -> InputKind | None:
    """"video", "images" (a folder of photos, or a folder whose images/ holds them, with no
    dataset files), or None."""
    p = Path(path)
    if is_video(p):
        return "video"
    if not p.is_dir():
        return None
    from .detect import detect_format  # a folder that is already a dataset needs no SfM

    try:
        detect_format(p)
        return None
    except DatasetError:
        return "images" if photo_folder(p) is not None else None


def _names(items: list[str]) -> str:
    more = f" and {len(items) - _LIST} more" if len(items) > _LIST else ""
    return ", ".join(items[:_LIST]) + more


def _fingerprint(files: list[Path]) -> list[tuple[str, int, int]]:
    out = []
    for f in files:
        st = f.stat()
        out.append((f.name, st.st_size, st.st_mtime_ns))
    return out


def _masks_dir(folder: Path) -> Path | None:
    for d in (folder / "masks", folder.parent / "masks" if folder.name == "images" else None):
        if d is not None and d.is_dir():
            return d
    return None


def cache_key(source: Path, opts: SfmOptions) -> str:
    """Hash of the input files (names, sizes, mtimes) and the options."""
    if is_video(source):
        files = {"video": _fingerprint([source])}
    else:
        folder = photo_folder(source) or source
        masks = _masks_dir(folder)
        files = {"images": _fingerprint(image_files(folder)[0]),
                 "masks": _fingerprint(sorted(p for p in masks.iterdir() if p.is_file())) if masks else []}  # fmt: skip
    doc = {"version": PIPELINE_VERSION, "files": files, "options": dataclasses.asdict(opts)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def default_output(source: Path, opts: SfmOptions, key: str | None = None) -> Path:
    """``<cache root>/sfm/<input name>-<hash>`` (the name only helps people reading the cache)."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in source.resolve().stem)[:40]
    return cache_root() / "sfm" / f"{name}-{(key or cache_key(source, opts))[:16]}"


def cached_or_run(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    opts: SfmOptions = SfmOptions(),
    log: Callable[[str], None] = lambda m: None,
    on_phase: Phase | None = None,
) -> SfmResult:
    """The SfM output for ``source``: reused when ``out`` (default: the cache) holds this
    input's finished SfM with these options, else made (progress: see :func:`run_sfm`)."""
    source = Path(source)
    if not source.exists():
        raise SfmError(source, "no such file or directory")
    if not (source.is_dir() or is_video(source)):
        raise SfmError(source, f"neither a folder of photos nor a video ({', '.join(VIDEO_SUFFIXES)})")
    key = cache_key(source, opts)
    out = Path(out) if out is not None else default_output(source, opts, key)
    summary_file = out / "sfm.json"
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, json.JSONDecodeError):
            summary = {}
        if summary.get("key") == key and (out / "sparse" / "0").is_dir():
            return SfmResult(out, summary, True)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if out.parent != cache_root() / "sfm":  # never clear a folder the user named
            raise SfmError(out, "exists and is not the SfM output of this input with these options "
                                "(choose another --out or remove it)")  # fmt: skip
        shutil.rmtree(out)
    return SfmResult(out, run_sfm(source, out, opts, log, key=key, on_phase=on_phase), False)


# ----------------------------------------------------------------------------- pipeline


def _quiet_colmap(log_prefix: Path) -> None:
    """COLMAP logs through glog: everything to a file in the output, nothing to the terminal."""
    import pycolmap

    lg = pycolmap.logging
    lg.logtostderr = False
    lg.alsologtostderr = False
    lg.stderrthreshold = lg.FATAL
    lg.minloglevel = lg.INFO
    lg.set_log_destination(lg.INFO, str(log_prefix))
    for level in (lg.WARNING, lg.ERROR, lg.FATAL):  # one file, not one per severity
        lg.set_log_destination(level, "")


def _thread_budget() -> int:
    """COLMAP's thread count: the process's compute budget (``--threads``), so that SfM shares
    the cores like training does; with one thread COLMAP's RANSAC and bundle adjustment are
    reproducible (with several, thread timing changes which pairs and poses survive)."""
    import torch

    return max(1, torch.get_num_threads())


def _full_size_camera(cam: Any, width: int, height: int) -> None:
    """Scales a camera fitted on a downscaled copy to the full-size image, in place."""
    import pycolmap

    sx, sy = width / cam.width, height / cam.height
    name, p = cam.model.name, [float(v) for v in cam.params]
    if name in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        f, cx, cy, extra = p[0], p[1], p[2], p[3:]
        if math.isclose(sx, sy, rel_tol=1e-9):
            p = [f * sx, cx * sx, cy * sy, *extra]
        elif name == "SIMPLE_PINHOLE":
            name, p = "PINHOLE", [f * sx, f * sy, cx * sx, cy * sy]
        else:  # radial terms act on normalised coordinates: unchanged by the scaling
            name, p = "OPENCV", [f * sx, f * sy, cx * sx, cy * sy, *(extra + [0.0])[:2], 0.0, 0.0]
    else:  # fx fy cx cy first
        p[0:4] = [p[0] * sx, p[1] * sy, p[2] * sx, p[3] * sy]
    cam.model = getattr(pycolmap.CameraModelId, name)
    cam.params = p
    cam.width, cam.height = width, height


def run_sfm(
    source: Path,
    out: Path,
    opts: SfmOptions = SfmOptions(),
    log: Callable[[str], None] = lambda m: None,
    *,
    key: str | None = None,
    on_phase: Phase | None = None,
) -> dict[str, Any]:
    """Runs every stage into ``out`` (built beside it, renamed when done); returns sfm.json.
    Progress goes to ``on_phase`` (default: a line to ``log`` every 30 s of a long phase)."""
    t_start = time.perf_counter()
    kind: InputKind = "video" if is_video(source) else "images"
    if not (kind == "video" or source.is_dir()):
        raise SfmError(source, f"neither a folder of photos nor a video ({', '.join(VIDEO_SUFFIXES)})")
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    run = _Run(source, kind, stage, opts, log, on_phase or EtaLines(log))
    try:
        return _run_stages(run, out, key or cache_key(source, opts), t_start)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # nothing half-made is left beside the output
        raise


@dataclass
class _Run:
    """What every stage of one SfM run needs."""

    source: Path
    kind: InputKind
    stage: Path  # the output being built
    opts: SfmOptions
    log: Callable[[str], None]
    phases: Phase
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.stage / "colmap"

    @property
    def database(self) -> Path:
        return self.work / "database.db"


def _run_stages(run: _Run, out: Path, key: str, t_start: float) -> dict[str, Any]:
    for d in (run.stage / "images", run.work):
        d.mkdir(parents=True)
    summary: dict[str, Any] = {"input": str(run.source.resolve()), "input_kind": run.kind, "key": key,
                               "options": dataclasses.asdict(run.opts)}  # fmt: skip
    prep, skipped, blurred = _images(run, summary)
    n = len(prep.names)
    _quiet_colmap(run.work / "colmap.log.")
    threads = _thread_budget()
    keypoints = _features(run, prep, threads)
    sfm_names = [prep.sfm_names[name] for name in prep.names]
    matcher, why = choose_matcher(run.opts.matcher, run.kind, sfm_names)
    count = pair_count(matcher, n)
    run.log(f"matcher: {matcher} ({why})" + (f": {count:,} image pairs" if count is not None else ""))
    pairs = _candidate_pairs(run, matcher, sfm_names)
    _match(run, pairs, threads, verify=False)
    run.log(f"matching ({matcher}): {len(pairs):,} image pairs in {run.seconds['matching']:.1f} s")
    _match(run, pairs, threads, verify=True)
    with _database(run.database) as db:
        # a pair that failed verification keeps its matches but has no inliers
        matched = db.num_matched_image_pairs()
        verified = sum(len(g.inlier_matches) > 0 for g in db.read_two_view_geometries()[1])
    run.log(f"verification: {verified:,} of {matched:,} image pairs geometrically verified "
            f"in {run.seconds['verification']:.1f} s")  # fmt: skip
    rec, registered, parts, by_sfm_name = _mapping(run, prep, matcher, threads)
    error_px = float(rec.compute_mean_reprojection_error())
    run.log(f"mapping: {len(registered)} of {n} images registered, {rec.num_points3D():,} points, mean reprojection "
            f"error {error_px:.2f} px (at {prep.sfm_size[0]}x{prep.sfm_size[1]}) in {run.seconds['mapping']:.1f} s")  # fmt: skip
    _write(run, rec, prep, by_sfm_name)
    cams = [{"model": c.model.name, "width": c.width, "height": c.height, "params": [float(v) for v in c.params]}
            for c in rec.cameras.values()]  # fmt: skip
    summary.update({
        "images_total": n,
        "images_registered": len(registered),
        "unregistered": [name for name in prep.names if name not in registered],
        "skipped": skipped,
        "exif_rotated": prep.rotated,
        "resized": prep.resized,
        "sharpness": {k: round(prep.sharpness[k], 3) for k in prep.names},
        "blurred": blurred,
        "image_size": list(prep.size),
        "sfm_size": list(prep.sfm_size),
        "matcher": matcher,
        "matcher_reason": why,
        "keypoints": keypoints,
        "image_pairs": matched,
        "verified_pairs": verified,
        "models": 1 + len(parts),
        "mean_reprojection_error_px": error_px,
        "points": rec.num_points3D(),
        "cameras": cams,
        "threads": threads,
        "stage_seconds": {k: round(v, 3) for k, v in run.seconds.items()},
        "seconds": round(time.perf_counter() - t_start, 3),
    })  # fmt: skip
    (run.stage / "sfm.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    run.stage.rename(out)
    return summary


@contextlib.contextmanager
def _timed(run: _Run, stage: str) -> Iterator[None]:
    """Adds the block's seconds to ``run.seconds[stage]``."""
    t = time.perf_counter()
    yield
    run.seconds[stage] = run.seconds.get(stage, 0.0) + time.perf_counter() - t


def _database(path: Path):  # -> pycolmap.Database, a context manager
    import pycolmap

    return pycolmap.Database.open(str(path))


# -- frames / images


def _images(run: _Run, summary: dict[str, Any]) -> tuple[Prepared, dict[str, list[str]], list[str]]:
    """The video's frames or the folder's photos, checked and copied (SfM-sized copies under
    colmap/images); returns them, the skipped ones and the blurred ones."""
    masks_dir = None
    ignored: list[Path] = []
    if run.kind == "video":
        with counting_files(run.work / "frames", "frame_*.jpg", run.phases("frames", run.opts.frames)):
            got = extract_frames(run.source, run.work / "frames", run.opts.frames)
        run.seconds["frames"] = got.seconds
        summary["video_frames_decoded"] = got.frames_decoded
        run.log(f"frames: kept the sharpest of each window: {len(got.paths)} of {got.frames_decoded} frames "
                f"in {got.seconds:.1f} s")  # fmt: skip
        files = got.paths
    else:
        folder = photo_folder(run.source) or run.source
        files, ignored = image_files(folder)
        masks_dir = _masks_dir(folder)
    with _timed(run, "images"):
        prep = prepare_images(files, run.stage / "images", run.stage / "masks", run.work / "images",
                              run.work / "masks", max_size=run.opts.max_size, masks_dir=masks_dir,
                              on_phase=run.phases)  # fmt: skip
    prep.ignored = [p.name for p in ignored]
    skipped = {k: v for k, v in prep.skipped.items() if v}
    n_skipped = sum(len(v) for v in skipped.values())
    if skipped:
        warnings.warn(f"{run.source}: skipped {n_skipped} of {len(files)} images — "
                      + "; ".join(f"{k}: {_names(v)}" for k, v in skipped.items()), stacklevel=4)  # fmt: skip
    n = len(prep.names)
    if n < 3:
        found = f"{n} usable image{'s' if n != 1 else ''}" + (f" ({n_skipped} skipped)" if n_skipped else "")
        raise SfmError(run.source, f"SfM needs at least 3 overlapping images, found {found}")
    run.log(f"images: {n} at {prep.size[0]}x{prep.size[1]}, SfM on copies at {prep.sfm_size[0]}x{prep.sfm_size[1]}"
            + (f"; {len(prep.rotated)} rotated by EXIF" if prep.rotated else "")
            + (f"; {len(prep.resized)} resized to the common size" if prep.resized else "")
            + (f"; {len(prep.ignored)} non-image files ignored" if prep.ignored else "")
            + (f"; masks{' from alpha' if masks_dir is None else ''}" if prep.masks else "")
            + f" in {run.seconds['images']:.1f} s")  # fmt: skip
    kind_name = "frames" if run.kind == "video" else "images"
    blurred = [prep.names[i] for i in report_blurred(prep.names, [prep.sharpness[k] for k in prep.names], run.log,
                                                     kind_name)]  # fmt: skip
    return prep, skipped, blurred


# -- features


def _features(run: _Run, prep: Prepared, threads: int) -> int:
    """SIFT on the SfM copies, a slice of images per call (for progress); returns the keypoints."""
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = run.opts.camera_model
    if prep.masks:
        reader.mask_path = str(run.work / "masks")
    if not run.opts.single_camera:
        mode = pycolmap.CameraMode.PER_IMAGE
    else:  # one camera per original size (a sub-folder each when sizes are mixed)
        mode = pycolmap.CameraMode.SINGLE if prep.groups == 1 else pycolmap.CameraMode.PER_FOLDER
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max(prep.sfm_size)
    extraction.num_threads = threads
    names = [prep.sfm_names[name] for name in prep.names]
    images = run.work / "images"
    with _timed(run, "features"):
        _database(run.database).close()  # created empty: import_images needs the file
        # every image and its camera first, so that the slices below share the cameras
        pycolmap.import_images(run.database, images, camera_mode=mode, image_names=names, options=reader)
        tick = run.phases("features", len(names))
        for part in chunks(names, _PROGRESS_STEPS, least=4 * threads):
            pycolmap.extract_features(run.database, images, image_names=list(part), camera_mode=mode,
                                      reader_options=reader, extraction_options=extraction)  # fmt: skip
            tick(len(part))
        with _database(run.database) as db:
            keypoints = db.num_keypoints()
    run.log(f"features: {keypoints:,} SIFT keypoints in {len(names)} images in {run.seconds['features']:.1f} s")
    return keypoints


# -- matching and verification


def _candidate_pairs(run: _Run, matcher: str, names: list[str]) -> list[tuple[str, str]]:
    """The image pairs to match, by SfM name."""
    n = len(names)
    if matcher == "exhaustive":
        pairs = exhaustive_pairs(n)
    elif matcher == "sequential":  # image names sort in capture order (frame_#####.jpg for a video)
        pairs = sequential_pairs(n)
    else:
        with _timed(run, "similarity"):
            pairs, ordered = retrieval_pairs(_image_descriptors(run, names), names)
        in_order = f" and the next {NUMBERED_OVERLAP} in name order (numbered names, in capture order)"
        run.log(f"similarity: {len(pairs):,} candidate pairs, each image with its {RETRIEVAL_NEIGHBOURS} most similar "
                f"by a bag of {WORDS} visual words{in_order if ordered else ''} in {run.seconds['similarity']:.1f} s")
    return [(names[i], names[j]) for i, j in pairs]


def _image_descriptors(run: _Run, names: list[str]):  # -> [N, WORDS] unit rows
    """Each image's global descriptor (see :mod:`.sfm_pairs`) from its SIFT descriptors in the
    database: a codebook from a sample of them, then each image's words counted."""
    import numpy as np

    with _database(run.database) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}

        def descriptors(name: str):
            return np.asarray(db.read_descriptors(ids[name]).data)

        sample = np.concatenate([codebook_sample(descriptors(name), len(names)) for name in names])
        words = kmeans(sample, WORDS, on_iteration=run.phases("codebook", KMEANS_ITERATIONS))
        tick = run.phases("similarity", len(names))
        counts = []
        for name in names:
            counts.append(word_counts(descriptors(name), words))
            tick(1)
    return global_descriptors(np.stack(counts))


def _match(run: _Run, pairs: list[tuple[str, str]], threads: int, *, verify: bool) -> None:
    """Matches the pairs' SIFT features (``verify``: verifies the matched pairs geometrically),
    a slice of pairs per call into COLMAP, for progress. COLMAP skips what is done already."""
    import pycolmap

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    matching.skip_geometric_verification = not verify
    pairing = pycolmap.ImportedPairingOptions()
    pairing.match_list_path = str(run.work / "pairs.txt")
    verification = pycolmap.TwoViewGeometryOptions()
    # RANSAC seeded for each pair: the verified pairs do not depend on the order of the pairs,
    # on how they are sliced into calls or on the thread count (unseeded, each worker thread
    # draws from its own generator, so all three change the outcome)
    verification.ransac.random_seed = 0
    stage = "verification" if verify else "matching"
    with _timed(run, stage):
        tick = run.phases(stage, len(pairs))
        for part in chunks(pairs, _PROGRESS_STEPS, least=16 * threads):
            (run.work / "pairs.txt").write_text("".join(f"{a} {b}\n" for a, b in part))
            pycolmap.match_image_pairs(run.database, matching_options=matching, pairing_options=pairing,
                                       verification_options=verification)  # fmt: skip
            tick(len(part))
        (run.work / "pairs.txt").unlink(missing_ok=True)


# -- mapping


def _mapping(run: _Run, prep: Prepared, matcher: str, threads: int):
    """Incremental mapping; returns the largest model, the names it registered, the other
    models with images of their own, and SfM name -> name."""
    import pycolmap

    n = len(prep.names)
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.min_model_size = 3  # small captures are fine; the registered fraction is checked below
    mapping.random_seed = 0
    mapping.num_threads = threads
    with _timed(run, "mapping"):
        tick = capped(run.phases("mapping", n), n)
        models = pycolmap.incremental_mapping(run.database, run.work / "images", run.work / "models", options=mapping,
                                              initial_image_pair_callback=lambda: tick(2),
                                              next_image_callback=lambda: tick(1))  # fmt: skip
    if not models:
        raise SfmError(run.source, f"no 3D model: none of the {n} images could be registered (too few features are "
                                   f"shared between them); photos need to overlap (each scene point seen from several "
                                   f"nearby viewpoints){'; try --matcher exhaustive' if matcher != 'exhaustive' else ''}")  # fmt: skip
    ranked = sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)
    rec = ranked[0]
    by_sfm_name = {v: k for k, v in prep.sfm_names.items()}
    registered = {by_sfm_name[rec.image(i).name] for i in rec.reg_image_ids()}
    # COLMAP's models may share images; only a model with images of its own is a separate part
    parts = [r for r in ranked[1:] if any(by_sfm_name[r.image(i).name] not in registered for i in r.reg_image_ids())]
    if parts:
        warnings.warn(f"{run.source}: SfM found {1 + len(parts)} disconnected models "
                      f"({', '.join(str(r.num_reg_images()) for r in [rec, *parts])} images); using the largest — "
                      f"add photos that link the parts to use them all", stacklevel=4)  # fmt: skip
    _check_registered(run, prep.names, registered, matcher)
    return rec, registered, parts, by_sfm_name


def _check_registered(run: _Run, names: list[str], registered: set[str], matcher: str) -> None:
    """Fails below ``min_registered`` of the images, else warns about the unregistered ones."""
    n = len(names)
    unregistered = [name for name in names if name not in registered]
    need = max(3, math.ceil(run.opts.min_registered * n))
    if run.kind == "video":
        hint = f"try more frames (--frames, now {run.opts.frames}) or --matcher exhaustive, or move the camera slower"
    elif matcher != "exhaustive":
        hint = "try --matcher exhaustive or photos with more overlap"
    else:
        hint = "take photos with more overlap between neighbours (or more of them)"
    if len(registered) < need:
        raise SfmError(run.source, f"only {len(registered)} of {n} images could be registered (unregistered: "
                                   f"{_names(unregistered)}); {hint}")  # fmt: skip
    if unregistered:
        warnings.warn(f"{run.source}: {len(unregistered)} of {n} images could not be registered and are left out: "
                      f"{_names(unregistered)} ({hint})", stacklevel=5)  # fmt: skip


# -- write


def _write(run: _Run, rec: Any, prep: Prepared, by_sfm_name: dict[str, str]) -> None:
    """The model at full size under the photos' own names into sparse/0; scratch removed."""
    with _timed(run, "write"):
        tick = run.phases("writing", 3)
        for cam in rec.cameras.values():
            _full_size_camera(cam, *prep.size)
        for image_id in list(rec.images):
            img = rec.image(image_id)
            img.name = by_sfm_name[img.name]
        tick(1)
        (run.stage / "sparse" / "0").mkdir(parents=True)
        rec.write(str(run.stage / "sparse" / "0"))
        tick(1)
        for d in ("images", "masks", "frames", "models"):  # the SfM-sized copies and scratch models
            shutil.rmtree(run.work / d, ignore_errors=True)
        tick(1)


def describe(summary: dict[str, Any]) -> str:
    """One line: registered images, points, reprojection error, seconds."""
    return (f"{summary['images_registered']} of {summary['images_total']} images registered, {summary['points']:,} "
            f"points, mean reprojection error {summary['mean_reprojection_error_px']:.2f} px, "
            f"{summary['seconds']:.0f} s")  # fmt: skip


def made_or_reused(source: Path, out: Path | None, opts: SfmOptions, log: Callable[[str], None],
                   on_phase: Phase | None = None) -> SfmResult:  # fmt: skip
    """The SfM output for ``source``, made or reused (and saying which)."""
    res = cached_or_run(source, out, opts, log=lambda m: log(f"sfm: {m}"), on_phase=on_phase)
    if res.reused:
        log(f"sfm: reusing {res.out} (SfM made earlier for this input and these options: {describe(res.summary)}; "
            f"remove that folder to redo it)")  # fmt: skip
        skipped = res.summary.get("skipped") or {}
        if skipped:
            log("sfm: skipped then: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in skipped.items()))
        scores = res.summary.get("sharpness") or {}
        if scores:  # the blurred frames, said again
            report_blurred(list(scores), list(scores.values()), lambda m: log(f"sfm: {m}"),
                           "frames" if res.summary.get("input_kind") == "video" else "images")  # fmt: skip
    return res


def capture_for_training(data: Path, log: Callable[[str], None], on_phase: Phase | None = None) -> Path:
    """``data`` itself when it is a dataset, else (photos or a video) its SfM output."""
    if input_kind(data) is None:
        return data
    log(f"sfm: {data} is a {'video' if is_video(data) else 'folder of photos'}: structure from motion first")
    res = made_or_reused(data, None, SfmOptions(), log, on_phase)
    if not res.reused:
        log(f"sfm: {describe(res.summary)} -> {res.out}")
    return res.out
