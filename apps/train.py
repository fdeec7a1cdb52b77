"""``splatfield train`` and ``splatfield eval``: a run directory from a dataset.

A run directory holds ``config.yaml`` (the options, enough to resume), ``checkpoints/``
(atomic, the last k kept), ``scene.ply`` (INRIA layout), ``cameras.json``,
``metrics.json``, ``renders/test/`` and ``refinements.jsonl`` (a line per density-control
step: what the strategy did). Ctrl-C or SIGTERM stops after the step in progress
and saves a checkpoint; ``--resume RUN`` continues from it exactly (parameters, Adam,
strategy state, RNG, view order).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

import numpy as np
import torch
import yaml
from PIL import Image

from splatfield import data as sfdata
from splatfield.render import Gaussians
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.evaluate import EvalResult, evaluate
from splatfield.scenes.formats.ply import read_ply, write_ply
from splatfield.scenes.gaussian_scene import GaussianScene, LearningRates
from splatfield.scenes.strategies import AdcConfig, SteepestConfig, Strategy, StrategyName, make_strategy
from splatfield.scenes.strategies.steepest import SplitCriterion
from splatfield.scenes.trainer import StepInfo, Trainer, TrainerConfig, Views

from .bench import peak_rss_mb, write_json_atomic


@dataclass(frozen=True)
class TrainOptions:
    """What a run was made with (``config.yaml``); the CLI's ``train`` options map onto it."""

    data: str
    out: str
    strategy: StrategyName = "adc"
    steps: int = 7000
    downscale: float = 1.0
    test_every: int = 8
    seed: int = 0
    sh_degree: Literal[0, 1, 2, 3] = 3
    init_points: int = 100_000
    init_half_size: Optional[float] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    evaluate: bool = True
    save_renders: bool = True
    # steepest (SteepestConfig)
    split_threshold: float = 1e-6
    split_grad_gate: bool = True
    split_displacement: float = 1.0
    max_splits: Optional[int] = None
    projection_curvature: bool = True
    split_criterion: SplitCriterion = "curvature"

    def to_yaml(self) -> str:
        return yaml.safe_dump({"splatfield_train": dataclasses.asdict(self)}, sort_keys=False)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainOptions:
        try:
            doc = yaml.safe_load(path.read_text())
            fields = doc["splatfield_train"]
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(fields) - known
            if unknown:
                raise ValueError(f"unknown options {sorted(unknown)}")
            return cls(**fields)
        except FileNotFoundError:
            raise RunError(path, "not found (is this a run directory?)") from None
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
            raise RunError(path, f"not a splatfield run config ({str(e).splitlines()[0]})") from None


class RunError(Exception):
    """A problem with a run directory, reported as one line naming the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass
class TrainResult:
    run: Path
    step: int
    finished: bool
    checkpoint: Path
    metrics: dict | None
    stop_signal: str | None


# ----------------------------------------------------------------------------- set-up


def load_views(split: sfdata.Split, progress: Callable[[int], None] | None = None) -> Views:
    images, masks = [], []
    for i in range(len(split)):
        images.append(split.image(i))
        masks.append(split.mask(i))
        if progress:
            progress(1)
    have_masks = any(m is not None for m in masks)
    if have_masks:
        full = torch.ones(split.cameras.height, split.cameras.width, dtype=torch.bool)
        mask_t = torch.stack([full if m is None else m for m in masks])
    return Views(split.cameras.to(dtype=torch.float32), torch.stack(images), mask_t if have_masks else None)


def background_of(dataset: sfdata.Dataset) -> tuple[float, float, float]:
    return tuple(dataset.background) if dataset.background is not None else (0.0, 0.0, 0.0)  # type: ignore[return-value]


def initial_scene(opts: TrainOptions, dataset: sfdata.Dataset, generator: torch.Generator) -> GaussianScene:
    extent = dataset.scene_extent()
    if dataset.points is not None and dataset.points.shape[0] > 0:
        pts = dataset.points.float()
        cols = dataset.point_colors.float() / 255.0 if dataset.point_colors is not None else torch.full_like(pts, 0.5)
    else:
        pts, cols = sfdata.random_initial_points(dataset.train.cameras, extent, opts.init_points, generator,
                                                 opts.init_half_size)  # fmt: skip
    # The position learning rate decays over the run's own length (as gsplat does), so a
    # short run ends on a settled step size instead of a third of the way down 3DGS's 30k decay.
    lrs = LearningRates(means_decay_steps=opts.steps)
    return GaussianScene.from_points(pts, cols, extent=extent, max_sh_degree=opts.sh_degree, lrs=lrs)


def refine_stop_for(steps: int) -> int:
    """Densification (and with it the opacity resets) stops at 15k steps as in 3DGS, or at 70%
    of a shorter run: a reset or a fresh split in the last steps leaves the scene no time to
    recover (a 7k run would otherwise reset opacities at step 6000)."""
    return min(15_000, round(0.7 * steps))


def strategy_for(opts: TrainOptions, dataset: sfdata.Dataset) -> Strategy:
    # 3DGS also resets opacities at the first densification on white-background captures
    white = background_of(dataset) == (1.0, 1.0, 1.0)
    schedule = {"reset_at_refine_start": white, "refine_stop": refine_stop_for(opts.steps)}
    steepest = SteepestConfig(**schedule, split_threshold=opts.split_threshold, grad_gate=opts.split_grad_gate,
                              displacement=opts.split_displacement, max_splits=opts.max_splits,
                              projection_curvature=opts.projection_curvature,
                              split_criterion=opts.split_criterion)  # fmt: skip
    return make_strategy(opts.strategy, adc=AdcConfig(**schedule), steepest=steepest)


def cameras_json(dataset: sfdata.Dataset) -> dict:
    def split(s: sfdata.Split) -> list[dict]:
        c = s.cameras
        return [
            {"image": str(s.image_paths[i]), "width": c.width, "height": c.height,
             "fx": float(c.fx[i]), "fy": float(c.fy[i]), "cx": float(c.cx[i]), "cy": float(c.cy[i]),
             "world_to_camera": c.world_to_camera[i].tolist()}
            for i in range(len(s))
        ]  # fmt: skip

    return {"convention": "OpenCV (x right, y down, z forward)", "train": split(dataset.train), "test": split(dataset.test)}


# ----------------------------------------------------------------------------- signals


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


def resume_trainer(run: Path, strategy: Strategy, views: Views, config: TrainerConfig,
                   dataset: sfdata.Dataset) -> tuple[Trainer, Path]:  # fmt: skip
    """A trainer in the state of the run's latest checkpoint (and that checkpoint's path)."""
    path = ckpt.latest_checkpoint(run / "checkpoints")
    if path is None:
        raise RunError(run / "checkpoints", "no checkpoint to resume from")
    state = ckpt.load_checkpoint(path)
    trainer = Trainer(GaussianScene.from_state_dict(state["scene"]), strategy, views, config=config,
                      background=background_of(dataset))  # fmt: skip
    trainer.load_state_dict(state)
    return trainer, path


def _save(trainer: Trainer, run: Path, opts: TrainOptions) -> Path:
    return ckpt.save_checkpoint(run / "checkpoints", trainer.step, trainer.state_dict(), keep=opts.keep_checkpoints)


def train(
    opts: TrainOptions,
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_phase: Callable[[str, int], Callable[[int], None]] | None = None,
    log: Callable[[str], None] = print,
    viewer: tuple[str, int] | None = None,
) -> TrainResult:
    """Trains (or resumes) the run ``opts.out``; evaluates and exports when it finishes.
    ``viewer`` = (host, port) serves a live browser viewer while training."""
    run = Path(opts.out)
    phase = on_phase or (lambda name, total: (lambda n: None))
    dataset = sfdata.load(opts.data, downscale=opts.downscale, test_every=opts.test_every)
    if len(dataset.train) == 0:
        raise RunError(opts.data, "the dataset has no training views")
    views = load_views(dataset.train, phase("loading images", len(dataset.train)))
    log(f"dataset: {dataset.name} ({dataset.format}), {len(views)} train / {len(dataset.test)} test views at "
        f"{views.cameras.width}x{views.cameras.height}, scene extent {dataset.scene_extent():.3g}")  # fmt: skip

    generator = torch.Generator().manual_seed(opts.seed)
    strategy = strategy_for(opts, dataset)
    config = TrainerConfig(steps=opts.steps, seed=opts.seed)
    if resume:
        trainer, path = resume_trainer(run, strategy, views, config, dataset)
        log(f"resumed {run} at step {trainer.step} from {path.name} ({len(trainer.scene):,} Gaussians)")
    else:
        scene = initial_scene(opts, dataset, generator)
        trainer = Trainer(scene, strategy, views, config=config, background=background_of(dataset))
        run.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write(run / "config.yaml", lambda f: f.write(opts.to_yaml().encode()))
        write_json_atomic(run / "cameras.json", cameras_json(dataset))
        log(f"run: {run} — {len(scene):,} initial Gaussians, strategy {opts.strategy}, {opts.steps} steps")

    def checkpoint_cb(tr: Trainer, info: StepInfo) -> None:
        if opts.checkpoint_every > 0 and info.step % opts.checkpoint_every == 0 and info.step < opts.steps:
            _save(tr, run, opts)

    def refinement_log_cb(tr: Trainer, info: StepInfo) -> None:
        # one JSON line per density-control edit: splits, prunes, the λ_min distribution...
        if info.changes:
            with open(run / "refinements.jsonl", "a") as f:
                f.write(json.dumps({"step": info.step, **info.changes, "gaussians": info.num_gaussians}) + "\n")

    callbacks = [checkpoint_cb, refinement_log_cb] + ([lambda tr, info: on_step(info)] if on_step else [])
    live = None
    if viewer is not None:
        from .view import training_viewer

        live, panel = training_viewer(trainer, dataset, run, opts.steps, background_of(dataset), host=viewer[0],
                                      port=viewer[1], log=log)  # fmt: skip
        callbacks.append(panel)
        log(f"viewer: {live.url} (training continues while you watch; --no-viewer to turn it off)")
    try:
        with graceful_stop(trainer) as received:
            finished = trainer.run(opts.steps, callbacks)
    finally:
        if live is not None:
            live.stop()
    path = _save(trainer, run, opts)
    if not finished:
        return TrainResult(run, trainer.step, False, path, None, received["signal"])

    write_ply(run / "scene.ply", trainer.scene.gaussians.detach())
    metrics = None
    if opts.evaluate:
        metrics = evaluate_run(run, trainer.scene, dataset, opts, steps=trainer.step,
                               train_seconds=trainer.train_seconds, on_phase=phase)  # fmt: skip
    return TrainResult(run, trainer.step, True, path, metrics, None)


def evaluate_run(
    run: Path,
    scene: GaussianScene,
    dataset: sfdata.Dataset,
    opts: TrainOptions,
    *,
    steps: int,
    train_seconds: float,
    on_phase: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict:
    """Renders the test views, writes ``renders/test/`` and ``metrics.json``; returns the metrics."""
    split = dataset.test if len(dataset.test) else dataset.train
    tick = (on_phase or (lambda name, total: (lambda n: None)))("evaluating", len(split))
    renders = run / "renders" / ("test" if len(dataset.test) else "train")
    if opts.save_renders:
        renders.mkdir(parents=True, exist_ok=True)

    def on_view(i: int, image: torch.Tensor) -> None:
        if opts.save_renders:
            arr = (image.cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            name = Path(split.image_paths[i]).stem
            ckpt.atomic_write(renders / f"{i:04d}_{name}.png", lambda f: Image.fromarray(arr).save(f, format="PNG"))
        tick(1)

    t0 = time.perf_counter()
    res: EvalResult = evaluate(scene, split.cameras.to(dtype=torch.float32), split.image, background=background_of(dataset),
                               mask_at=split.mask, on_view=on_view)  # fmt: skip
    metrics = {
        "psnr": res.psnr,
        "ssim": res.ssim,
        "lpips": res.lpips,
        "lpips_note": res.lpips_note,
        "num_gaussians": len(scene),
        "steps": steps,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "split": "test" if len(dataset.test) else "train",
        "views": len(split),
        "width": split.cameras.width,
        "height": split.cameras.height,
        "per_view": [{"image": Path(split.image_paths[i]).name, **row} for i, row in enumerate(res.per_view)],
    }
    write_json_atomic(run / "metrics.json", metrics)
    return metrics


def eval_run(run: Path, *, on_phase=None, log: Callable[[str], None] = print) -> dict:
    """``splatfield eval RUN``: re-evaluates the run's latest checkpoint."""
    opts = TrainOptions.from_yaml(run / "config.yaml")
    path = ckpt.latest_checkpoint(run / "checkpoints")
    if path is None:
        raise RunError(run / "checkpoints", "no checkpoint to evaluate")
    state = ckpt.load_checkpoint(path)
    scene = GaussianScene.from_state_dict(state["scene"])
    dataset = sfdata.load(opts.data, downscale=opts.downscale, test_every=opts.test_every)
    log(f"evaluating {run} at step {state['step']} ({len(scene):,} Gaussians)")

    return evaluate_run(run, scene, dataset, opts, steps=int(state["step"]), train_seconds=float(state["train_seconds"]),
                        on_phase=on_phase)  # fmt: skip


def run_gaussians(run: Path) -> Gaussians:
    """The scene of a run: its latest checkpoint (what ``eval`` measures), else ``scene.ply``."""
    last = ckpt.latest_checkpoint(run / "checkpoints")
    if last is not None:
        return GaussianScene.from_state_dict(ckpt.load_checkpoint(last)["scene"]).gaussians.detach()
    if (run / "scene.ply").is_file():
        return read_ply(run / "scene.ply")
    raise RunError(run, "no checkpoint and no scene.ply")


def default_run_dir(data: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{data.resolve().name}-{stamp}"
