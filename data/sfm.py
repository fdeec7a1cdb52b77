"""Structure from motion with pycolmap: a photo folder or a video -> a COLMAP capture.

Stages: frames (a video: the sharpest frame of each of ``frames`` windows), images (check,
rotate by EXIF, skip unreadable/duplicate files, one size; see :mod:`.sfm_inputs`; the
frames below half the median sharpness are reported as blurred, see :mod:`.sharpness`),
features (SIFT on copies at most ``max_size`` pixels long), matching (exhaustive for photos,
sequential for a video's frames, unless chosen), incremental mapping, and writing.

The output is a standard COLMAP capture that :func:`splatfield.data.load` reads::

    <out>/images/      the photos or frames at full size (EXIF rotation applied)
    <out>/masks/       <name>.png when the input had masks or an alpha channel
    <out>/sparse/0/    cameras, images, points3D (+ COLMAP 4's rigs, frames), .bin
    <out>/sfm.json     the summary (registered images, reprojection error, seconds per stage,
                       each image's sharpness and the blurred ones)
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
from typing import Any, Callable, Literal

from .dataset import DatasetError, cache_root
from .sharpness import report_blurred
from .sfm_inputs import image_files, photo_folder, prepare_images
from .video_frames import VIDEO_SUFFIXES, extract_frames, is_video

SfmMatcher = Literal["auto", "exhaustive", "sequential"]
SfmCameraModel = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE"]
InputKind = Literal["images", "video"]
PIPELINE_VERSION = 1  # part of the cache key: bump when the output would change
_LIST = 10  # names listed in one message before "and N more"


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
) -> SfmResult:
    """The SfM output for ``source``: reused when ``out`` (default: the cache) holds this
    input's finished SfM with these options, else made."""
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
    return SfmResult(out, run_sfm(source, out, opts, log, key=key), False)


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
) -> dict[str, Any]:
    """Runs every stage into ``out`` (built beside it, renamed when done); returns sfm.json."""
    t_start = time.perf_counter()
    kind: InputKind = "video" if is_video(source) else "images"
    if not (kind == "video" or source.is_dir()):
        raise SfmError(source, f"neither a folder of photos nor a video ({', '.join(VIDEO_SUFFIXES)})")
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        return _run_stages(source, kind, stage, out, opts, log, key or cache_key(source, opts), t_start)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # nothing half-made is left beside the output
        raise


def _run_stages(source: Path, kind: InputKind, stage: Path, out: Path, opts: SfmOptions, log: Callable[[str], None],
                key: str, t_start: float) -> dict[str, Any]:  # fmt: skip
    import pycolmap

    work = stage / "colmap"
    for d in (stage / "images", work):
        d.mkdir(parents=True)
    seconds: dict[str, float] = {}
    summary: dict[str, Any] = {"input": str(source.resolve()), "input_kind": kind, "key": key,
                               "options": dataclasses.asdict(opts)}  # fmt: skip

    # -- frames / images
    masks_dir = None
    if kind == "video":
        got = extract_frames(source, work / "frames", opts.frames)
        seconds["frames"] = got.seconds
        summary["video_frames_decoded"] = got.frames_decoded
        log(f"frames: kept the sharpest of each window: {len(got.paths)} of {got.frames_decoded} frames "
            f"in {got.seconds:.1f} s")  # fmt: skip
        files = got.paths
        ignored: list[Path] = []
    else:
        folder = photo_folder(source) or source
        files, ignored = image_files(folder)
        masks_dir = _masks_dir(folder)
    t = time.perf_counter()
    prep = prepare_images(files, stage / "images", stage / "masks", work / "images", work / "masks",
                          max_size=opts.max_size, masks_dir=masks_dir)  # fmt: skip
    prep.ignored = [p.name for p in ignored]
    seconds["images"] = time.perf_counter() - t
    skipped = {k: v for k, v in prep.skipped.items() if v}
    n_skipped = sum(len(v) for v in skipped.values())
    if skipped:
        warnings.warn(f"{source}: skipped {n_skipped} of {len(files)} images — "
                      + "; ".join(f"{k}: {_names(v)}" for k, v in skipped.items()), stacklevel=2)  # fmt: skip
    n = len(prep.names)
    if n < 3:
        found = f"{n} usable image{'s' if n != 1 else ''}" + (f" ({n_skipped} skipped)" if n_skipped else "")
        raise SfmError(source, f"SfM needs at least 3 overlapping images, found {found}")
    log(f"images: {n} at {prep.size[0]}x{prep.size[1]}, SfM on copies at {prep.sfm_size[0]}x{prep.sfm_size[1]}"
        + (f"; {len(prep.rotated)} rotated by EXIF" if prep.rotated else "")
        + (f"; {len(prep.resized)} resized to the common size" if prep.resized else "")
        + (f"; {len(prep.ignored)} non-image files ignored" if prep.ignored else "")
        + (f"; masks{' from alpha' if masks_dir is None else ''}" if prep.masks else "")
        + f" in {seconds['images']:.1f} s")  # fmt: skip
    blurred = [prep.names[i] for i in report_blurred(prep.names, [prep.sharpness[k] for k in prep.names], log,
                                                     "frames" if kind == "video" else "images")]  # fmt: skip

    # -- features
    _quiet_colmap(work / "colmap.log.")
    threads = _thread_budget()
    database = work / "database.db"
    t = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = opts.camera_model
    if prep.masks:
        reader.mask_path = str(work / "masks")
    if not opts.single_camera:
        mode = pycolmap.CameraMode.PER_IMAGE
    else:  # one camera per original size (a sub-folder each when sizes are mixed)
        mode = pycolmap.CameraMode.SINGLE if prep.groups == 1 else pycolmap.CameraMode.PER_FOLDER
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max(prep.sfm_size)
    extraction.num_threads = threads
    sfm_names = [prep.sfm_names[name] for name in prep.names]
    pycolmap.extract_features(database, work / "images", image_names=sfm_names, camera_mode=mode,
                              reader_options=reader, extraction_options=extraction)  # fmt: skip
    with pycolmap.Database.open(str(database)) as db:
        keypoints = db.num_keypoints()
    seconds["features"] = time.perf_counter() - t
    log(f"features: {keypoints:,} SIFT keypoints in {n} images in {seconds['features']:.1f} s")

    # -- matching
    matcher = opts.matcher if opts.matcher != "auto" else ("sequential" if kind == "video" else "exhaustive")
    t = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=matching)
    else:  # image names sort in capture order (frame_#####.jpg for a video)
        pycolmap.match_sequential(database, matching_options=matching)
    with pycolmap.Database.open(str(database)) as db:
        # a pair that failed verification is still stored, with no inliers
        pairs = db.num_matched_image_pairs()
        verified = sum(len(g.inlier_matches) > 0 for g in db.read_two_view_geometries()[1])
    seconds["matching"] = time.perf_counter() - t
    log(f"matching ({matcher}): {pairs:,} image pairs, {verified:,} geometrically verified "
        f"in {seconds['matching']:.1f} s")

    # -- mapping
    t = time.perf_counter()
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.min_model_size = 3  # small captures are fine; the registered fraction is checked below
    mapping.random_seed = 0
    mapping.num_threads = threads
    models = pycolmap.incremental_mapping(database, work / "images", work / "models", options=mapping)
    seconds["mapping"] = time.perf_counter() - t
    if not models:
        raise SfmError(source, f"no 3D model: none of the {n} images could be registered (too few features are shared "
                               f"between them); photos need to overlap (each scene point seen from several nearby "
                               f"viewpoints){'; try --matcher exhaustive' if matcher != 'exhaustive' else ''}")  # fmt: skip
    ranked = sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)
    rec = ranked[0]
    by_sfm_name = {v: k for k, v in prep.sfm_names.items()}
    registered = {by_sfm_name[rec.image(i).name] for i in rec.reg_image_ids()}
    # COLMAP's models may share images; only a model with images of its own is a separate part
    parts = [r for r in ranked[1:] if any(by_sfm_name[r.image(i).name] not in registered for i in r.reg_image_ids())]
    if parts:
        warnings.warn(f"{source}: SfM found {1 + len(parts)} disconnected models "
                      f"({', '.join(str(r.num_reg_images()) for r in [rec, *parts])} images); using the largest — "
                      f"add photos that link the parts to use them all", stacklevel=2)  # fmt: skip
    unregistered = [name for name in prep.names if name not in registered]
    need = max(3, math.ceil(opts.min_registered * n))
    if kind == "video":
        hint = f"try more frames (--frames, now {opts.frames}) or --matcher exhaustive, or move the camera slower"
    elif matcher != "exhaustive":
        hint = "try --matcher exhaustive or photos with more overlap"
    else:
        hint = "take photos with more overlap between neighbours (or more of them)"
    if len(registered) < need:
        raise SfmError(source, f"only {len(registered)} of {n} images could be registered (unregistered: "
                               f"{_names(unregistered)}); {hint}")  # fmt: skip
    if unregistered:
        warnings.warn(f"{source}: {len(unregistered)} of {n} images could not be registered and are left out: "
                      f"{_names(unregistered)} ({hint})", stacklevel=2)  # fmt: skip
    error_px = float(rec.compute_mean_reprojection_error())
    log(f"mapping: {len(registered)} of {n} images registered, {rec.num_points3D():,} points, mean reprojection "
        f"error {error_px:.2f} px (at {prep.sfm_size[0]}x{prep.sfm_size[1]}) in {seconds['mapping']:.1f} s")  # fmt: skip

    # -- write
    t = time.perf_counter()
    for cam in rec.cameras.values():
        _full_size_camera(cam, *prep.size)
    for image_id in list(rec.images):
        img = rec.image(image_id)
        img.name = by_sfm_name[img.name]
    (stage / "sparse" / "0").mkdir(parents=True)
    rec.write(str(stage / "sparse" / "0"))
    for d in ("images", "masks", "frames", "models"):  # the SfM-sized copies and scratch models
        shutil.rmtree(work / d, ignore_errors=True)
    seconds["write"] = time.perf_counter() - t
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    cams = [{"model": c.model.name, "width": c.width, "height": c.height, "params": [float(v) for v in c.params]}
            for c in rec.cameras.values()]  # fmt: skip
    summary.update({
        "images_total": n,
        "images_registered": len(registered),
        "unregistered": unregistered,
        "skipped": skipped,
        "exif_rotated": prep.rotated,
        "resized": prep.resized,
        "sharpness": {k: round(prep.sharpness[k], 3) for k in prep.names},
        "blurred": blurred,
        "image_size": list(prep.size),
        "sfm_size": list(prep.sfm_size),
        "matcher": matcher,
        "keypoints": keypoints,
        "image_pairs": pairs,
        "verified_pairs": verified,
        "models": 1 + len(parts),
        "mean_reprojection_error_px": error_px,
        "points": rec.num_points3D(),
        "cameras": cams,
        "stage_seconds": seconds,
        "seconds": round(time.perf_counter() - t_start, 3),
    })  # fmt: skip
    (stage / "sfm.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    stage.rename(out)
    return summary


def describe(summary: dict[str, Any]) -> str:
    """One line: registered images, points, reprojection error, seconds."""
    return (f"{summary['images_registered']} of {summary['images_total']} images registered, {summary['points']:,} "
            f"points, mean reprojection error {summary['mean_reprojection_error_px']:.2f} px, "
            f"{summary['seconds']:.0f} s")  # fmt: skip


def made_or_reused(source: Path, out: Path | None, opts: SfmOptions, log: Callable[[str], None]) -> SfmResult:
    """The SfM output for ``source``, made or reused (and saying which)."""
    res = cached_or_run(source, out, opts, log=lambda m: log(f"sfm: {m}"))
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


def capture_for_training(data: Path, log: Callable[[str], None]) -> Path:
    """``data`` itself when it is a dataset, else (photos or a video) its SfM output."""
    if input_kind(data) is None:
        return data
    log(f"sfm: {data} is a {'video' if is_video(data) else 'folder of photos'}: structure from motion first")
    res = made_or_reused(data, None, SfmOptions(), log)
    if not res.reused:
        log(f"sfm: {describe(res.summary)} -> {res.out}")
    return res.out
