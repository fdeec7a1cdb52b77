"""``splatfield bench curve``: test PSNR against training time, from a run's checkpoints.

Each checkpoint records its step and ``train_seconds`` (the training loop's time, without
evaluation or checkpoint writing); its scene is rebuilt (as ``Run.scene`` does) and
evaluated on the run's test split (its training split when it has no test views, as
``splatfield train`` evaluates), every ``every``-th view from the first. LPIPS is not
computed. Everything a run needs (its config, checkpoints, dataset) is checked by
:func:`plan` before the first evaluation, so that bad input fails at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from splatfield import data as sfdata
from splatfield.render._ext import native_available, native_has_cuda
from splatfield.scenes.checkpoint import checkpoints, load_checkpoint
from splatfield.scenes.evaluate import evaluate
from splatfield.scenes.run import Run, RunError, scene_from_state_dict

from ..machine import machine_info, peak_rss_mb
from ..run_data import background_of, load_dataset


@dataclass
class CurvePoint:
    step: int
    train_seconds: float
    psnr: float | None  # None where not finite (an empty mask: NaN; a perfect render: inf)
    ssim: float | None
    count: int  # the scene's size, in count_label
    count_label: str
    eval_seconds: float


@dataclass
class RunCurve:
    run: str
    label: str
    scene_kind: str
    data: str
    split: str  # "test", or "train" for a dataset without test views
    views: list[int]  # indices into the split of the views evaluated
    images: list[str]  # their file names
    width: int
    height: int
    checkpoints_skipped: int  # later than --max-seconds
    points: list[CurvePoint] = field(default_factory=list)

    @property
    def last(self) -> CurvePoint | None:
        return self.points[-1] if self.points else None


@dataclass
class CurveResult:
    every: int
    max_seconds: float | None
    device: str
    backend: str
    threads: int
    torch: str
    cpu: dict
    total_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    runs: list[RunCurve] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PlannedRun:
    run: Run
    label: str
    checkpoints: list[tuple[int, Path]]  # (step, path), oldest first
    dataset: sfdata.Dataset


def plan(paths: Sequence[Path], labels: Sequence[str]) -> list[PlannedRun]:
    """Opens every run, lists its checkpoints and loads its dataset (RunError / DatasetError
    naming the file when one is not usable)."""
    out = []
    datasets: dict[tuple, sfdata.Dataset] = {}  # runs on the same data share it
    for path, label in zip(paths, labels):
        run = Run.open(Path(path))
        found = checkpoints(run.checkpoints_dir)
        if not found:
            raise RunError(run.checkpoints_dir, "no checkpoint (a curve needs the run's checkpoints)")
        key = (run.config.data, run.config.dataset.downscale, run.config.dataset.test_every)
        if key not in datasets:
            datasets[key] = load_dataset(run.config)
        out.append(PlannedRun(run, label, found, datasets[key]))
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def view_indices(n: int, every: int) -> list[int]:
    """The views evaluated: 0, every, 2 * every, ... below n."""
    return list(range(0, n, every))


def _load(path: Path) -> dict:
    try:
        state = load_checkpoint(path)
    except FileNotFoundError:
        raise RunError(path, "vanished while the curve was measured (is the run still training?)") from None
    except Exception as e:  # a truncated or foreign file: torch's unpickling errors vary
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunError(path, f"not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or not all(k in state for k in ("step", "train_seconds", "scene")):
        raise RunError(path, "not a splatfield checkpoint (needs step, train_seconds and scene)")
    return state


def measure_run(
    planned: PlannedRun,
    *,
    every: int = 1,
    max_seconds: float | None = None,
    device: torch.device = torch.device("cpu"),
    progress: Callable[[], None] | None = None,
) -> RunCurve:
    """One run's curve: its checkpoints in step order (those with ``train_seconds`` above
    ``max_seconds`` skipped), each evaluated on the same views."""
    dataset = planned.dataset
    split_name = "test" if len(dataset.test) else "train"
    split = dataset.test if len(dataset.test) else dataset.train
    views = view_indices(len(split), every)
    cameras = split.cameras.to(dtype=torch.float32)[slice(0, None, every)]
    images = [split.image(i) for i in views]  # read once, used for every checkpoint
    masks = [split.mask(i) for i in views]
    curve = RunCurve(run=str(planned.run.path), label=planned.label, scene_kind=planned.run.config.scene_kind,
                     data=planned.run.config.data, split=split_name, views=views,
                     images=[Path(split.image_paths[i]).name for i in views], width=cameras.width,
                     height=cameras.height, checkpoints_skipped=0)  # fmt: skip
    background = background_of(dataset)
    for _, path in planned.checkpoints:
        state = _load(path)
        seconds = float(state["train_seconds"])
        if max_seconds is not None and seconds > max_seconds:
            curve.checkpoints_skipped += 1
            del state
            if progress:
                progress()
            continue
        scene = scene_from_state_dict(state["scene"], device).snapshot()  # what Run.scene(step) gives
        t0 = time.perf_counter()
        res = evaluate(scene, cameras, images.__getitem__, background=background,
                       mask_at=masks.__getitem__, use_lpips=False)  # fmt: skip
        curve.points.append(CurvePoint(step=int(state["step"]), train_seconds=seconds, psnr=_finite(res.psnr),
                                       ssim=_finite(res.ssim), count=len(scene), count_label=scene.count_label,
                                       eval_seconds=time.perf_counter() - t0))  # fmt: skip
        curve.scene_kind = scene.kind
        del scene, state
        if progress:
            progress()
    return curve


def measure(
    planned: Sequence[PlannedRun],
    *,
    every: int = 1,
    max_seconds: float | None = None,
    device: torch.device = torch.device("cpu"),
    progress: Callable[[], None] | None = None,
) -> CurveResult:
    """The curves of the planned runs (``progress()`` once per checkpoint, evaluated or skipped)."""
    native = native_has_cuda() if device.type == "cuda" else native_available()
    result = CurveResult(every=every, max_seconds=max_seconds, device=str(device),
                         backend="native" if native else "reference", threads=torch.get_num_threads(),
                         torch=torch.__version__, cpu=machine_info())  # fmt: skip
    t0 = time.perf_counter()
    for p in planned:
        result.runs.append(measure_run(p, every=every, max_seconds=max_seconds, device=device, progress=progress))
    result.total_seconds = time.perf_counter() - t0
    result.peak_rss_mb = peak_rss_mb()
    return result
