"""``splatfield train``: a run directory from a dataset (or photos, a video, a saved config),
or the continuation of one (``--resume``).

The run's options are the sections of :class:`~splatfield.scenes.options.RunConfig`,
declared once next to the code that runs them and parsed here flat (``--steps``,
``--downscale``, ``--split-threshold``; the density control's own under ``--adc.``). On
``--resume`` the options that may change (steps, checkpoints, evaluation; threads and the
viewer are not part of the run) are applied and ``config.yaml`` updated, the old one kept
beside it; any other option given with a different value is refused in one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least, check_device, check_port, finite_at_least, flag, require
from splatfield.scenes.options import (
    RESUMABLE, CorrectionConfig, DataConfig, FieldConfig, GaussianConfig, OutputConfig, RunConfig, SceneKind,
    TrainerConfig,
    check_corrections, check_strategies, option_names, option_paths, with_options,
)  # fmt: skip
from splatfield.scenes.strategies.options import (
    AdcConfig, DepthRankConfig, DistillConfig, ElasticConfig, SteepestConfig, StrategyName,
)  # fmt: skip

from .console import PROG, bars, phase_bar, print_metrics, report_stop, say, sfm_console, train_progress
from .errors import CLIError, require_exists

Flat = tyro.conf.OmitArgPrefixes  # the sections of scenes.options.PLAIN_SECTIONS


@dataclass(frozen=True)
class Train:
    """Trains a scene — Gaussian splatting, or a radiance field with --model field — on a dataset
    (Blender, transforms.json, COLMAP, LLFF, a folder of photos or a video) into a run directory:
    config.yaml, checkpoints/, scene.ply (Gaussians), cameras.json, metrics.json, renders/test/.
    Ctrl-C (or SIGTERM) saves a checkpoint; --resume RUN continues it."""

    data: Annotated[Optional[Path], tyro.conf.Positional, tyro.conf.arg(metavar="DATA")] = None
    """Dataset folder (or its transforms/poses file), or a folder of photos or a video (SfM first,
    with `splatfield sfm`'s defaults, cached); not needed with --resume or --config."""
    model: SceneKind = "gaussians"
    """What is trained: gaussians (3D Gaussian splatting) or field (a radiance field on a sparse
    grid, options under --field.; docs/FIELD.md)."""
    strategy: tuple[StrategyName, ...] = ("adc",)
    """Training strategies, run in order around each step: adc (3DGS adaptive density control),
    steepest (SteepGS: split only at saddle points), elastic (FlexGS: servable at any size ratio,
    options under --elastic.; docs/TRAINING.md), distill (score distillation from a diffusion
    prior on random views, options under --distill.; docs/LIFTING.md), depth_rank (a depth map's
    order taught to one view, options under --depth-rank.), none (fixed Gaussians). adc and steepest exclude
    each other (both densify). A field has none (the default with --model field)."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="RUN", help_behavior_hint="(default: runs/<data>-<time>)")] = None
    """Run directory to create."""
    resume: Annotated[Optional[Path], tyro.conf.arg(metavar="RUN", help_behavior_hint="(default: a new run)")] = None
    """Continue this run from its latest checkpoint (or --checkpoint's), exactly where it stopped;
    --steps, --checkpoint-every, --keep-checkpoints, --eval, --threads and the viewer may change."""
    checkpoint: Annotated[Optional[int], tyro.conf.arg(metavar="STEP", help_behavior_hint="(default: the latest)")] = None
    """With --resume: the checkpoint to continue from (later ones are moved aside, not deleted)."""
    config: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: none)")] = None
    """Start a new run from a saved config.yaml; options given here override its values."""
    dataset: Annotated[DataConfig, Flat] = DataConfig()
    scene: Annotated[GaussianConfig, Flat] = GaussianConfig()
    trainer: Annotated[TrainerConfig, Flat] = TrainerConfig()
    outputs: Annotated[OutputConfig, Flat] = OutputConfig()
    steepest: Annotated[SteepestConfig, Flat] = SteepestConfig()
    corrections: Annotated[CorrectionConfig, Flat] = CorrectionConfig()
    adc: AdcConfig = AdcConfig()
    field: FieldConfig = FieldConfig()
    elastic: ElasticConfig = ElasticConfig()
    distill: DistillConfig = DistillConfig()
    depth_rank: DepthRankConfig = DepthRankConfig()
    threads: Annotated[Optional[int], tyro.conf.arg(metavar="T", help_behavior_hint="(default: torch's choice)")] = None
    """torch.set_num_threads(T)."""
    viewer: bool = True
    """Serve a live browser viewer while training (its URL is printed); --no-viewer for headless."""
    viewer_port: int = 8080
    """Port of the viewer (the next free one if taken; 0: any free port)."""
    viewer_host: str = "127.0.0.1"
    """Interface the viewer listens on (0.0.0.0: reachable from other machines)."""
    nproc: int = 1
    """Train in this many processes (torchrun, data-parallel: each renders its share of every
    batch of --batch-size views; gloo on CPUs, NCCL on GPUs)."""
    dist_timeout: float = 60.0
    """Seconds a process waits for the others before it stops (one killed or stalled)."""
    given: tyro.conf.Suppress[tuple[str, ...]] = ()
    """The flags given on the command line (filled in by the CLI: a resume applies only those)."""
    argv: tyro.conf.Suppress[tuple[str, ...]] = ()
    """The command line itself (filled in by the CLI: --nproc relaunches it under torchrun)."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        check_strategies(self.strategy)
        at_least(self.threads, "threads", 1)
        at_least(self.nproc, "nproc", 1)
        finite_at_least(self.dist_timeout, "dist_timeout", 1.0)
        require(self.trainer.batch_size % self.nproc == 0, "batch_size",
                f"must be a multiple of --nproc (each process renders its share): {self.trainer.batch_size} views "
                f"over {self.nproc} processes")  # fmt: skip
        at_least(self.checkpoint, "checkpoint", 0)
        require(self.model == "gaussians" or self.nproc == 1, "nproc", "a radiance field trains in one process")
        check_corrections(self.model, self.corrections)
        if self.viewer:
            check_port(self.viewer_port, "viewer_port")


def flag_options() -> dict[str, str]:
    """Command-line flag -> run option (``--split-threshold`` -> ``steepest.split_threshold``;
    ``--no-eval`` -> ``outputs.eval``; ``--adc.no-x`` is tyro's negation of a prefixed flag)."""
    out = {"--strategy": "strategy", "--model": "scene_kind"}
    for name, path in option_names().items():
        section, _, field_name = name.rpartition(".")
        out[flag(name)] = path
        out[flag(f"{section}.no_{field_name}" if section else f"no_{field_name}")] = path
    return out


def given_options(cfg: Train) -> dict[str, Any]:
    """The run options the user gave, as ``section.field`` -> the parsed value."""
    table = flag_options()
    values = option_paths(_as_run_config(cfg, data="", out=""))
    given = {table[f] for f in cfg.given if f in table}
    out = {p: values[p] for p in given}
    if cfg.data is not None:
        out["data"] = str(cfg.data.resolve())
    return out


def _as_run_config(cfg: Train, data: str, out: str) -> RunConfig:
    # the density control is the Gaussians' default; a field has no strategy unless one is named
    strategy = cfg.strategy if cfg.model == "gaussians" or "--strategy" in cfg.given else ("none",)
    return RunConfig(data=data, out=out, scene_kind=cfg.model, strategy=strategy, dataset=cfg.dataset,
                     scene=cfg.scene, trainer=cfg.trainer, outputs=cfg.outputs, adc=cfg.adc, steepest=cfg.steepest,
                     field=cfg.field, elastic=cfg.elastic, distill=cfg.distill, depth_rank=cfg.depth_rank,
                     corrections=cfg.corrections)  # fmt: skip


def resumed_config(saved: RunConfig, given: dict[str, Any]) -> RunConfig:
    """``saved`` with the options given on resume applied; refuses those that cannot change."""
    current = option_paths(saved)
    if "data" in given and Path(given["data"]) == Path(saved.data).resolve():
        del given["data"]
    fixed = sorted(p for p, v in given.items() if p not in RESUMABLE and current.get(p) != v)
    if fixed:
        table: dict[str, str] = {}
        for k, v in flag_options().items():
            table.setdefault(v, k)  # the positive spelling comes first
        names = ", ".join(f"{table.get(p, 'DATA')} (the run has {current.get(p)!r})" for p in fixed)
        raise CLIError(f"--resume: cannot change {names}; start a new run with --config {{RUN}}/config.yaml to change it")
    return with_options(saved, {p: v for p, v in given.items() if p in RESUMABLE})


def launch(cfg: Train) -> int:
    """``--nproc K``: the same command in K processes on this machine, through torch's elastic
    launcher (what ``torchrun --standalone`` runs), reporting a failed process in one line."""
    import logging
    import os
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args, skip = [], False
    for tok in cfg.argv:  # the command line without --nproc
        if skip:
            skip = False
        elif tok == "--nproc":
            skip = True
        elif not tok.startswith("--nproc="):
            args.append(tok)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its report is ours to give
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg.nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)  # fmt: skip
    say(f"{PROG} train: {cfg.nproc} processes")
    try:
        elastic_launch(config, sys.executable)("-m", "splatfield.apps.cli", *args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        how = f"signal {-failure.exitcode}" if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        raise CLIError(f"--nproc: process {rank} ended with {how}; the others were stopped", code=1) from None
    return 0


def run(cfg: Train) -> int:
    from splatfield.scenes.parallel import launched_processes

    if cfg.nproc > 1 and launched_processes() == 1:
        return launch(cfg)
    import os

    import torch

    from splatfield.render.device import resolve_device
    from splatfield.scenes.parallel import DataParallel

    device = resolve_device(cfg.device)
    parallel = None
    if launched_processes() > 1:
        parallel = DataParallel.start(device, cfg.dist_timeout)
        device = parallel.device  # one GPU per process
        if cfg.threads is None:  # share the cores instead of each process taking them all
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // parallel.world))
    try:
        return _train(cfg, device, parallel)
    finally:
        if parallel is not None:
            parallel.stop()


def _train(cfg: Train, device, parallel) -> int:
    import torch

    from splatfield.scenes.run import Run, read_config

    from . import training

    main = parallel is None or parallel.is_main
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    given = given_options(cfg)
    if cfg.checkpoint is not None and cfg.resume is None:
        raise CLIError("--checkpoint: goes with --resume RUN")
    if cfg.resume is not None:
        if cfg.config is not None:
            raise CLIError("--config: starts a new run; a resumed run keeps its own config.yaml")
        if cfg.out is not None:
            raise CLIError(f"--out: a resumed run stays in its directory ({cfg.resume})")
        run_dir = Run.open(cfg.resume)
        config = resumed_config(run_dir.config, given)
        path = run_dir.checkpoint_path(cfg.checkpoint)  # refused here when missing, before anything changes
        step = int(path.stem.split("_")[1])
        if main:  # the other processes read the same checkpoint, named by its step
            aside = run_dir.set_aside_checkpoints_after(step) if cfg.checkpoint is not None else None
            if aside is not None:
                say(f"resume from step {step}: the later checkpoints moved to {aside}")
            old = run_dir.update_config(config, f"before-resume-at-{step}")
            if old is not None:
                say(f"config.yaml updated ({', '.join(sorted(p for p in given if p in RESUMABLE))}); the previous one is {old}")
        resume_from: int | None = step
    else:
        base = read_config(cfg.config) if cfg.config is not None else None
        if base is None and cfg.data is None:
            raise CLIError("DATA: give a dataset folder (or --resume RUN, or --config FILE)")
        data = cfg.data if cfg.data is not None else Path(base.data)  # type: ignore[union-attr]
        require_exists(data)
        out = cfg.out if cfg.out is not None else training.default_run_dir(data)
        if Run.holds_run(out):
            raise CLIError(f"{out}: already holds a run (continue it with --resume {out}, or choose another --out)")
        from splatfield.data.sfm import capture_for_training

        if not main:
            parallel.barrier()  # the first process runs SfM (if the data needs it); the others reuse it
        if main:  # photos or a video: SfM first, with a bar per phase
            with bars() as opened:
                sfm_log, sfm_phase = sfm_console(opened, say)
                data = capture_for_training(data, log=sfm_log, on_phase=sfm_phase)
        else:
            data = capture_for_training(data, log=lambda m: None)
        if main and parallel is not None:
            parallel.barrier()
        if base is None:
            config = _as_run_config(cfg, data=str(data.resolve()), out=str(out))
        else:
            config = dataclasses.replace(with_options(base, {k: v for k, v in given.items() if k != "data"}),
                                         data=str(data.resolve()), out=str(out))  # fmt: skip
        resume_from = None
    with bars() as opened:
        res = training.train(config, run_path=cfg.resume, resume_from=resume_from,
                             on_step=train_progress(config.trainer.steps, opened), on_phase=phase_bar(opened), log=say,
                             viewer=(cfg.viewer_host, cfg.viewer_port) if cfg.viewer else None, device=device,
                             parallel=parallel)  # fmt: skip
    if not main:
        return 0 if res.finished else 1
    if res.lost_peer is not None:
        print(f"stopped at step {res.step}: another process was lost ({res.lost_peer}); checkpoint {res.checkpoint}")
        print(f"continue with: {PROG} train --resume {res.run}" + (f" --nproc {parallel.world}" if parallel else ""))
        return 1
    if not res.finished:
        return report_stop(res.stop_signal, res.step, f"checkpoint {res.checkpoint}", f"{PROG} train --resume {res.run}")
    scene = f"; scene {res.run / 'scene.ply'}" if (res.run / "scene.ply").exists() else ""
    print(f"trained {res.step} steps; checkpoint {res.checkpoint}{scene}")
    if res.metrics is not None:
        print_metrics(res.metrics)
        print(f"train time {res.metrics['train_seconds']:.0f} s, peak RSS {res.metrics['peak_rss_mb']:.0f} MiB; "
              f"metrics: {res.run / 'metrics.json'}")  # fmt: skip
    return 0
