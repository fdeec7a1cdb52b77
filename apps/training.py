"""Training a run: its dataset, views and initial scene, the trainer, the callbacks that
write checkpoints and logs and feed the viewer, and the evaluation when it finishes.

Shared by ``splatfield train``, ``demo``, ``eval``, ``bench train`` and ``bench viewer``
(no command imports another). The run directory itself is :mod:`splatfield.scenes.run`.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from splatfield import data as sfdata
from splatfield.render import Cameras
from splatfield.scenes.camera_opt import CameraOptSettings
from splatfield.scenes.checkpoint import write_json_atomic
from splatfield.scenes.corrections import ViewCorrections
from splatfield.scenes.evaluate import EvalResult, align_cameras, evaluate
from splatfield.scenes.formats.ply import write_ply
from splatfield.scenes.field_scene import FieldScene, learns_background
from splatfield.scenes.gaussian_scene import GaussianScene, LearningRates
from splatfield.scenes.options import RunConfig
from splatfield.scenes.parallel import DataParallel, PeerLost
from splatfield.scenes.run import Run, RunError, scene_from_state_dict
from splatfield.scenes.scene import Scene
from splatfield.scenes.strategies.distill import Distill
from splatfield.scenes.strategies.registry import make_strategies
from splatfield.scenes.trainer import StepInfo, Trainer
from splatfield.scenes.views import Views

from .machine import peak_rss_mb
from .run_data import RefinedCameras, background_of, cameras_json, load_dataset, load_views, with_refined_cameras
from .media import save_png, to_uint8

Phase = Callable[[str, int], Callable[[int], None]]


def _no_phase(name: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class TrainResult:
    run: Path
    step: int
    finished: bool
    checkpoint: Path | None  # None in the processes after the first (they write nothing)
    metrics: dict | None
    stop_signal: str | None
    lost_peer: str | None = None  # with several processes: why another one was lost


# ----------------------------------------------------------------------------- set-up


def initial_scene(config: RunConfig, dataset: sfdata.Dataset, generator: torch.Generator,
                  device: torch.device = torch.device("cpu"), silhouettes: torch.Tensor | None = None) -> Scene:  # fmt: skip
    """The run's kind of scene at step 0 (:func:`initial_gaussians`, :func:`initial_field`)."""
    if config.scene_kind == "field":
        return initial_field(config, dataset, device)
    return initial_gaussians(config, dataset, generator, device, silhouettes)


def field_box(config: RunConfig, dataset: sfdata.Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The field's grid box: --field.box-half-size around the cameras' look-at centre, else
    the dataset's own box (transforms.json's aabb_scale), else extent / 3 around that centre
    (the cube the Gaussians start in)."""
    half = config.field.box_half_size
    if half is None and dataset.bounds is not None:
        return dataset.bounds
    centre = sfdata.look_at_centre(dataset.train.cameras)
    half = dataset.scene_extent() / 3 if half is None else half
    return tuple(float(c - half) for c in centre), tuple(float(c + half) for c in centre)


def initial_field(config: RunConfig, dataset: sfdata.Dataset, device: torch.device = torch.device("cpu")) -> FieldScene:
    lo, hi = field_box(config, dataset)
    learned = learns_background(config.field, known_background=dataset.background is not None)
    return FieldScene.create(lo, hi, config.field, device=device, learned_background=learned)


def initial_gaussians(config: RunConfig, dataset: sfdata.Dataset, generator: torch.Generator,
                      device: torch.device = torch.device("cpu"), silhouettes: torch.Tensor | None = None,
                      ) -> GaussianScene:  # fmt: skip
    """SfM points when the dataset has them, else (an object capture: ``silhouettes`` of the
    training views) the masks' visual hull, else random points in a cube (GaussianConfig)."""
    extent = dataset.scene_extent()
    cams, n, half = dataset.train.cameras, config.scene.init_points, config.scene.init_half_size
    if dataset.points is not None and dataset.points.shape[0] > 0:
        pts = dataset.points.float()
        cols = dataset.point_colors.float() / 255.0 if dataset.point_colors is not None else torch.full_like(pts, 0.5)
    elif silhouettes is not None and (hull := sfdata.visual_hull_points(cams, silhouettes, extent, n, generator, half)):
        pts, cols = hull
    else:
        pts, cols = sfdata.random_initial_points(cams, extent, n, generator, half)
    lrs = LearningRates(means_decay_steps=config.trainer.steps)
    return GaussianScene.from_points(pts, cols, extent=extent, max_sh_degree=config.scene.sh_degree, lrs=lrs, device=device)


def new_trainer(config: RunConfig, dataset: sfdata.Dataset, views: Views, state: dict | None = None,
                device: torch.device = torch.device("cpu"), parallel: DataParallel | None = None) -> Trainer:  # fmt: skip
    """A trainer at step 0 (the initial scene), or in the state of a checkpoint, on ``device``
    (the views stay in host memory, pinned for a GPU, and travel a batch at a time)."""
    strategies = make_strategies(config.strategies, scene_kind=config.scene_kind, adc=config.adc,
                                 steepest=config.steepest, elastic=config.elastic, distill=config.distill,
                                 depth_rank=config.depth_rank,
                                 steps=config.trainer.steps,
                                 background=background_of(dataset), ssim_weight=config.trainer.ssim_weight)  # fmt: skip
    if state is None:
        scene = initial_scene(config, dataset, torch.Generator().manual_seed(config.trainer.seed), device,
                              views.silhouettes)  # fmt: skip
    else:
        scene = scene_from_state_dict(state["scene"], device)
    if device.type == "cuda" and not views.images.is_pinned():
        views.images = views.images.pin_memory()
    trainer = Trainer(scene, strategies, views, config=config.trainer, background=background_of(dataset), parallel=parallel,
                      corrections=view_corrections(config, dataset, views, device,
                                                   points=scene.points() if config.corrections.camera_opt != "off" else None))  # fmt: skip
    if state is not None:
        trainer.load_state_dict(state)
    return trainer


def view_corrections(config: RunConfig, dataset: sfdata.Dataset, views: Views, device: torch.device,
                     points: torch.Tensor | None = None) -> ViewCorrections:  # fmt: skip
    """The run's camera refinement and per-image appearance (none unless asked for);
    ``points``: the scene's Gaussians, which place the cameras' pivots."""
    c = config.corrections
    settings = CameraOptSettings(pose_lr=c.camera_pose_lr, intrinsics_lr=c.camera_intrinsics_lr, reg=c.camera_reg,
                                 final_lr_fraction=c.camera_lr_final_ratio, pivot=c.camera_pivot)  # fmt: skip
    return ViewCorrections.build(views.cameras, camera_opt=c.camera_opt, camera_settings=settings,
                                 appearance=c.appearance, appearance_lr=c.appearance_lr,
                                 extent=dataset.scene_extent(), steps=config.trainer.steps, device=device,
                                 points=points)  # fmt: skip


def refined_cameras(trainer: Trainer, dataset: sfdata.Dataset) -> RefinedCameras | None:
    """The trainer's refined training cameras and its test views in the refined frame with the
    refined intrinsics (None without camera refinement)."""
    cams = trainer.corrections.cameras
    if cams is None:
        return None
    given = dataset.train.cameras.to(dtype=torch.float32)
    train = cams.refined(given)
    test = cams.refined_others(dataset.test.cameras.to(dtype=torch.float32), given)
    return RefinedCameras(train.to(device="cpu"), test.to(device="cpu"), cams.summary())


@contextmanager
def graceful_stop(trainer: Trainer) -> Iterator[dict]:
    """SIGINT/SIGTERM ask the trainer to stop after the step in progress (a second Ctrl-C
    interrupts at once). Yields a dict whose "signal" names the signal received, if any."""
    received: dict = {"signal": None}

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if received["signal"] == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        received["signal"] = name
        trainer.request_stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- train


def train(
    config: RunConfig,
    *,
    run_path: Path | None = None,
    resume_from: int | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_phase: Phase | None = None,
    log: Callable[[str], None] = print,
    viewer: tuple[str, int] | None = None,
    device: torch.device = torch.device("cpu"),
    parallel: DataParallel | None = None,
) -> TrainResult:
    """Trains the run in ``run_path`` (default: ``config.out``; ``resume``: from its latest
    checkpoint, or the one of step ``resume_from``; a new run directory is created once the
    trainer is set up); evaluates and exports when it finishes. ``viewer`` = (host, port)
    serves a live browser viewer while training. With ``parallel`` (several processes) every
    process trains the same scene and the first alone writes, logs and serves the viewer."""
    path = Path(run_path if run_path is not None else config.out)
    main = parallel is None or parallel.is_main
    if not main:
        log, on_step, viewer = (lambda m: None), None, None
    phase = on_phase or _no_phase
    notes: list[str] = []  # what loading said (blurred frames dropped), logged after the dataset line
    dataset = load_dataset(config, log=notes.append)
    if len(dataset.train) == 0:
        raise RunError(config.data, "the dataset has no training views")
    views = load_views(dataset.train, phase("loading images", len(dataset.train)))
    log(f"dataset: {dataset.name} ({dataset.format}), {len(views)} train / {len(dataset.test)} test views at "
        f"{views.cameras.width}x{views.cameras.height}, scene extent {dataset.scene_extent():.3g}; device {device}")  # fmt: skip
    if dataset.masks_note:
        log(dataset.masks_note)
    for note in notes:
        log(note)

    if resume or resume_from is not None:
        run = Run(path, config)
        state, ckpt_path = run.load_state(resume_from)
        trainer = new_trainer(config, dataset, views, state, device, parallel)
        log(f"resumed {run.path} at step {trainer.step} from {ckpt_path.name} ({len(trainer.scene):,} {trainer.scene.count_label})")
    else:
        trainer = new_trainer(config, dataset, views, device=device, parallel=parallel)
        run = Run.create(path, config) if main else Run(path, config)
        if main:
            write_json_atomic(run.path / "cameras.json", cameras_json(dataset))
        log(f"run: {run.path} — {len(trainer.scene):,} initial {trainer.scene.count_label}, strategy "
            f"{' '.join(config.strategy)}, {config.trainer.steps} steps")  # fmt: skip
    for line in trainer.corrections.describe():
        log(line)
    for strategy in trainer.strategies.items:
        if isinstance(strategy, Distill):
            log(strategy.describe())
    steps = config.trainer.steps
    every = config.outputs.checkpoint_every

    def save(tr: Trainer) -> Path:
        path = run.save_checkpoint(tr.step, tr.state_dict())
        refined = refined_cameras(tr, dataset)
        if refined is not None:  # the refined cameras beside the checkpoint that holds them
            write_json_atomic(run.path / "cameras.json", cameras_json(dataset, refined))
        return path

    def checkpoint_cb(tr: Trainer, info: StepInfo) -> None:
        if every > 0 and info.step % every == 0 and info.step < steps:
            save(tr)

    def refinement_log_cb(tr: Trainer, info: StepInfo) -> None:
        # one JSON line per density-control edit: splits, prunes, the λ_min distribution...
        if info.changes:
            with open(run.path / "refinements.jsonl", "a") as f:
                f.write(json.dumps({"step": info.step, **info.changes, "gaussians": info.num_gaussians}) + "\n")

    callbacks = ([checkpoint_cb, refinement_log_cb] if main else []) + ([lambda tr, info: on_step(info)] if on_step else [])
    live = None
    if viewer is not None:
        from .viewer.sessions import training_viewer

        live, panel = training_viewer(trainer, dataset, run.path, steps, background_of(dataset), host=viewer[0],
                                      port=viewer[1], log=log)  # fmt: skip
        callbacks.append(panel)
        log(f"viewer: {live.url} (training continues while you watch; --no-viewer to turn it off)")
    lost = None
    try:
        with graceful_stop(trainer) as received:
            finished = trainer.run(steps, callbacks)
    except PeerLost as e:  # the step in progress changed nothing yet: save the one before it
        trainer.rewind_step()
        finished, lost = False, str(e)
    finally:
        if live is not None:
            live.stop()
    last = save(trainer) if main else None  # the first process writes
    if not finished:
        return TrainResult(run.path, trainer.step, False, last, None, received["signal"], lost)
    if not main:
        return TrainResult(run.path, trainer.step, True, last, None, None)

    if isinstance(trainer.scene, GaussianScene):
        write_ply(run.path / "scene.ply", trainer.scene.gaussians.detach())
    for line in trainer.corrections.describe_result():
        log(line)
    metrics = None
    if config.outputs.eval:
        metrics = evaluate_run(run, trainer.scene, dataset, steps=trainer.step, train_seconds=trainer.train_seconds,
                               on_phase=phase)  # fmt: skip
    return TrainResult(run.path, trainer.step, True, last, metrics, None)


def evaluate_run(run: Run, scene, dataset: sfdata.Dataset, *, steps: int, train_seconds: float,
                 on_phase: Phase | None = None, align_steps: int | None = None) -> dict:  # fmt: skip
    """Renders the test views, writes ``renders/test/`` and ``metrics.json``; returns the metrics.

    A run with camera refinement is evaluated twice: with the test cameras as given
    (``as_given``), and ``aligned``, the headline (``metrics["headline"]``): the test cameras
    moved into the refined training cameras' frame, with the refined intrinsics, then each
    pose fitted to its image with the scene frozen for ``--align-steps`` steps (0: the change
    of frame alone), as nerfstudio and gsplat report it. The aligned poses go into
    ``cameras.json``. ``align_steps`` overrides the run's (any Gaussian run can be aligned)."""
    split = dataset.test if len(dataset.test) else dataset.train
    phase = on_phase or _no_phase
    renders = run.path / "renders" / ("test" if len(dataset.test) else "train")
    save = run.config.outputs.save_renders
    if save:
        renders.mkdir(parents=True, exist_ok=True)
    refined = run.config.corrections.camera_opt != "off"
    if align_steps is None:
        align_steps = run.config.corrections.align_steps if refined else None
    aligning = align_steps is not None and scene.kind == "gaussians" and len(dataset.test) > 0

    def saver(tick: Callable[[int], None], write: bool) -> Callable[[int, torch.Tensor], None]:
        def on_view(i: int, image: torch.Tensor) -> None:
            if write:
                save_png(renders / f"{i:04d}_{Path(split.image_paths[i]).stem}.png", to_uint8(image))
            tick(1)

        return on_view

    bg = background_of(dataset)
    t0 = time.perf_counter()
    given: EvalResult = evaluate(scene, split.cameras.to(dtype=torch.float32), split.image, background=bg,
                                 mask_at=split.mask, silhouette_at=split.silhouette,
                                 on_view=saver(phase("evaluating", len(split)), save and not aligning))  # fmt: skip
    res, extra = given, {}
    if aligning:  # from the test cameras in the refined frame, with the refined intrinsics
        start = with_refined_cameras(dataset, run.path).test.cameras
        aligned = start if align_steps == 0 else align_cameras(
            scene, start, split.image, mask_at=split.mask, background=bg, extent=dataset.scene_extent(),
            steps=align_steps, pivot=run.config.corrections.camera_pivot,
            tick=phase(f"aligning test views ({align_steps} steps each)", len(split)))  # fmt: skip
        res = evaluate(scene, aligned, split.image, background=bg, mask_at=split.mask,
                       silhouette_at=split.silhouette, on_view=saver(phase("evaluating aligned", len(split)), save))  # fmt: skip
        extra = {"headline": "aligned", "align_steps": align_steps, "align_pivot": run.config.corrections.camera_pivot,
                 "as_given": _summary(given),
                 "aligned": _summary(res)}  # fmt: skip
        _record_aligned(run, dataset, aligned)
    metrics = {
        "psnr": res.psnr,
        "ssim": res.ssim,
        "lpips": res.lpips,
        "lpips_note": res.lpips_note,
        "alpha_outside_masks": res.alpha_outside,
        **extra,
        "num_gaussians": len(scene),  # the scene's count (of count_label), under its first name
        "count_label": scene.count_label,
        "scene_kind": scene.kind,
        "steps": steps,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "split": "test" if len(dataset.test) else "train",
        "views": len(split),
        "width": split.cameras.width,
        "height": split.cameras.height,
        "per_view": [{"image": Path(split.image_paths[i]).name, **row,
                      **({"psnr_as_given": given.per_view[i]["psnr"]} if aligning else {})}
                     for i, row in enumerate(res.per_view)],  # fmt: skip
    }
    write_json_atomic(run.path / "metrics.json", metrics)
    return metrics


def _summary(res: EvalResult) -> dict:
    return {"psnr": res.psnr, "ssim": res.ssim, "lpips": res.lpips, "alpha_outside_masks": res.alpha_outside}


def _record_aligned(run: Run, dataset: sfdata.Dataset, aligned: Cameras) -> None:
    """The aligned test poses into the run's ``cameras.json`` (beside the refined cameras)."""
    path = run.path / "cameras.json"
    doc = json.loads(path.read_text()) if path.is_file() else cameras_json(dataset)
    for rec, w2c in zip(doc.get("test", []), aligned.world_to_camera.cpu().tolist()):
        rec["aligned"] = {"world_to_camera": w2c}
    write_json_atomic(path, doc)


def eval_run(path: Path, *, on_phase: Phase | None = None, log: Callable[[str], None] = print,
             device: torch.device = torch.device("cpu"), align_steps: int | None = None) -> dict:  # fmt: skip
    """Re-evaluates the run's latest checkpoint."""
    run = Run.open(path)
    state, _ = run.load_state()
    scene = scene_from_state_dict(state["scene"], device)
    dataset = load_dataset(run.config)
    log(f"evaluating {path} at step {state['step']} ({len(scene):,} {scene.count_label})")
    return evaluate_run(run, scene, dataset, steps=int(state["step"]), train_seconds=float(state["train_seconds"]),
                        on_phase=on_phase, align_steps=align_steps)  # fmt: skip


def default_run_dir(data: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{data.resolve().name}-{stamp}"
