"""What ``splatfield lift-prior train`` does (see :mod:`.lift_prior`); nothing here prints."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from splatfield.data import arrangements as A
from splatfield.scenes.checkpoint import atomic_write
from splatfield.scenes.distill import NoiseSchedule
from splatfield.scenes.distill.prior import (
    ReferenceCondition, camera_features, camera_tokens, denoising_loss, new_scheduler, new_unet, save_prior,
)  # fmt: skip

from .lift_options import LiftPriorTrain


@dataclass
class PriorResult:
    prior: Path
    step: int
    seconds: float
    loss: float
    interrupted: bool
    megabytes: float


def views_for(cfg: LiftPriorTrain, on_phase: Callable) -> tuple[np.ndarray, np.ndarray]:
    """The rendered training views, cached in ``out/data.npz`` for these settings."""
    path = cfg.out / "data.npz"
    key = np.array([cfg.arrangements, cfg.views, cfg.size, cfg.seed, A.TRAIN_SEED_START])
    if path.is_file():
        with np.load(path) as d:
            if np.array_equal(d["key"], key):
                return d["images"], d["cameras"]
    tick = on_phase("rendering the training views", cfg.arrangements)
    seeds = range(A.TRAIN_SEED_START, A.TRAIN_SEED_START + cfg.arrangements)
    images, cams = A.training_views(seeds, cfg.views, cfg.size, rng=np.random.default_rng(cfg.seed), on_seed=lambda i: tick(1))
    tmp = path.with_name(".data.partial.npz")
    np.savez(tmp, key=key, images=images.astype(np.float16), cameras=cams)
    tmp.replace(path)
    return images.astype(np.float16), cams


def train_prior(cfg: LiftPriorTrain, *, on_phase: Callable | None = None, log: Callable[[str], None] = print) -> PriorResult:
    phase = on_phase or (lambda name, total: (lambda n: None))
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    images, cams = views_for(cfg, phase)
    images_t = torch.from_numpy(images.astype(np.float32)).permute(0, 1, 4, 2, 3) * 2 - 1  # [S, V, 3, H, W] in [-1, 1]
    cams_t = torch.from_numpy(cams.astype(np.float32))
    torch.manual_seed(cfg.seed)  # the network's start (diffusers draws it from torch's global generator)
    unet, scheduler = new_unet(cfg.size), new_scheduler(cfg.prediction)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, seconds = 0, 0.0
    state_path, prior = cfg.out / "state.pt", cfg.out / "prior"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, seconds = state["step"], state["seconds"]
        log(f"resumed at step {step} ({seconds / 60:.1f} min of training)")
    schedule = NoiseSchedule(scheduler.alphas_cumprod.to(torch.float64))
    n = sum(p.numel() for p in unet.parameters())
    log(f"prior: {n:,} parameters, {cfg.arrangements} arrangements x {cfg.views} views at {cfg.size}x{cfg.size}, "
        f"batch {cfg.batch}, lr {cfg.lr:g}, predicting {cfg.prediction}, {torch.get_num_threads()} thread(s)")  # fmt: skip

    def save() -> None:
        meta = {"steps": step, "train_seconds": round(seconds, 1), "settings": {k: str(v) for k, v in asdict(cfg).items()},
                "command": f"splatfield lift-prior train --arrangements {cfg.arrangements} --views {cfg.views} "
                           f"--size {cfg.size} --batch {cfg.batch} --lr {cfg.lr:g} --prediction {cfg.prediction} --seed {cfg.seed}"
                           + ("" if cfg.minutes is None else f" --minutes {cfg.minutes:g}")}  # fmt: skip
        save_prior(prior, ema, scheduler, meta)
        state = {"unet": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                 "generator": gen.get_state(), "step": step, "seconds": seconds}
        atomic_write(state_path, lambda f: torch.save(state, f))

    budget = None if cfg.minutes is None else cfg.minutes * 60
    recent: list[float] = []
    loss_value = float("nan")
    S, V = images_t.shape[:2]
    try:
        while step < cfg.steps and (budget is None or seconds < budget):
            t0 = time.perf_counter()
            s = torch.randint(0, S, (cfg.batch,), generator=gen)
            ref_v = torch.randint(0, V, (cfg.batch,), generator=gen)
            tgt_v = (ref_v + torch.randint(1, V, (cfg.batch,), generator=gen)) % V  # another view of the same object
            feats = camera_features(cams_t[s, ref_v, 0], cams_t[s, ref_v, 1], cams_t[s, tgt_v, 0], cams_t[s, tgt_v, 1])
            cond = ReferenceCondition(images_t[s, ref_v], camera_tokens(feats))
            loss = denoising_loss(unet, schedule, images_t[s, tgt_v], cond, gen, prediction=cfg.prediction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # warmed up: a plain 0.999 average still holds 41% of the random start after 900 steps
                decay = min(cfg.ema, (1.0 + step) / (10.0 + step))
                for pe, p in zip(ema.parameters(), unet.parameters()):
                    pe.lerp_(p, 1.0 - decay)
            step += 1
            seconds += time.perf_counter() - t0
            recent = (recent + [loss.item()])[-100:]
            loss_value = float(np.mean(recent))
            if step % 50 == 0:
                left = "" if budget is None else f", {max(0.0, budget - seconds) / 60:.1f} min left"
                log(f"step {step}: loss {loss_value:.4f} (mean of the last {len(recent)}), {seconds / step:.2f} s/step{left}")
            if step % cfg.save_every == 0:
                save()
    except KeyboardInterrupt:
        save()
        return PriorResult(prior, step, seconds, loss_value, True, folder_megabytes(prior))
    save()
    return PriorResult(prior, step, seconds, loss_value, False, folder_megabytes(prior))


def folder_megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6
