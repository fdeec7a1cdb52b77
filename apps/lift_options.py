"""The options of ``splatfield lift`` and ``splatfield lift-prior`` (torch-free: parsed by the
command line, read by the work modules :mod:`.lift_run` and :mod:`.lift_prior_run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import ConfigError, at_least, check_device, finite_at_least, require
from splatfield.scenes.strategies.options import DistillConfig, Estimator


# lift's distillation defaults, validated with the procedural prior (docs/LIFTING.md)
LIFT_DISTILL = DistillConfig(weight=3e-4, guidance_scale=1.0)


@dataclass(frozen=True)
class Lift:
    """Lifts one image of an object into 3D Gaussians: its reference view's colour and
    silhouette, plus score distillation from a diffusion prior on random views around it
    (--guidance: the shipped procedural prior by default, or a local Stable Diffusion folder
    with --prompt), and a depth map's order with --depth; or a prompt alone through a local
    Stable Diffusion folder (text-to-3D) (docs/LIFTING.md)."""

    image: Annotated[Optional[Path], tyro.conf.Positional, tyro.conf.arg(metavar="IMAGE")] = None
    """A square image of the object (PNG with alpha, or any image with --mask); none with
    --prompt alone (text-to-3D: a text-to-image --guidance checkpoint does all the work)."""
    mask: Optional[Path] = None
    """The object's silhouette (white = object); default: the image's alpha channel."""
    prompt: str = ""
    """What the object is, for a text-to-image --guidance checkpoint (Stable Diffusion layout
    with text_encoder/ and tokenizer/); the procedural prior ignores words and takes the
    image. Without IMAGE, the prompt alone is lifted (text-to-3D)."""
    depth: Optional[Path] = None
    """A depth map of the image (a monocular estimate: an image or .npy at any size): its
    near-far order is taught to the reference view on sampled pixel pairs (depth_rank)."""
    depth_kind: Literal["disparity", "depth"] = "disparity"
    """How --depth is written: disparity (larger is nearer, as MiDaS/DPT-style estimators write) or depth."""
    depth_weight: float = 1.0
    """Weight of the depth-ranking loss (with --depth)."""
    guidance: str = "procedural"
    """procedural (the prior of our own shipped with splatfield: objects seen at lift's default
    camera distance and field of view), a diffusers checkpoint folder (unet/, scheduler/,
    optional vae/; read locally), or none (the reference view alone)."""
    estimator: Optional[Estimator] = None
    """Shorthand for --distill.estimator: sds, vsd, esd or stein (None: sds)."""
    guidance_scale: Optional[float] = None
    """Shorthand for --distill.guidance-scale (None: 1, the procedural prior's best; a Stable
    Diffusion checkpoint wants 7.5 or more, Zero-1-to-3 3-5)."""
    model: Literal["gaussians", "field"] = "gaussians"
    """What is lifted: 3D Gaussians, or a radiance field (a grid in the cube the reference
    camera sees around the centre, --field.* options of train)."""
    out: Path = Path("runs/lift")
    """Output folder: reference/ (the one-view dataset), run/ (a run directory), orbit.mp4."""
    steps: int = 1000
    """Training steps."""
    size: Optional[int] = None
    """Resize the image to SIZE x SIZE (None: as it is)."""
    elevation: float = 0.0
    """Elevation of the reference camera above the object's horizontal plane, in degrees."""
    fov: float = 40.0
    """Field of view of the reference camera, in degrees."""
    radius: float = 2.5
    """Distance of the reference camera from the object's centre (the object should fill a
    good part of the image: at 40 degrees it sees about +-0.9 units around the centre)."""
    init_points: int = 5000
    """Random initial Gaussians in a cube around the centre."""
    init_half_size: float = 0.5
    """Half size of that cube."""
    sh_degree: int = 0
    """Spherical-harmonics degree (0: one colour per Gaussian; one view cannot teach more)."""
    frames: int = 24
    """Frames of the orbit video."""
    seed: int = 0
    """Seed of the initial Gaussians, training and distillation."""
    distill: DistillConfig = LIFT_DISTILL
    """Score distillation's options (--distill.estimator, --distill.guidance-scale, ...); its
    guidance folder is --guidance. The defaults suit the procedural prior (weight 3e-4 and
    its conditional prediction alone, guidance scale 1: measured best on validation
    arrangements, docs/LIFTING.md); a Stable Diffusion checkpoint wants a guidance scale of
    7.5 or more."""
    device: str = "auto"
    """auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.guidance_scale is not None:
            finite_at_least(self.guidance_scale, "guidance_scale", 0.0)
        at_least(self.steps, "steps", 1)
        at_least(self.size, "size", 8)
        require(-89.0 <= self.elevation <= 89.0, "elevation", f"must be within [-89, 89] degrees (got {self.elevation})")
        require(0.0 < self.fov < 180.0, "fov", f"must be in (0, 180) degrees (got {self.fov})")
        finite_at_least(self.radius, "radius", 0.0, strict=True)
        at_least(self.init_points, "init_points", 1)
        finite_at_least(self.init_half_size, "init_half_size", 0.0, strict=True)
        require(self.sh_degree in (0, 1, 2, 3), "sh_degree", f"must be 0, 1, 2 or 3 (got {self.sh_degree})")
        at_least(self.frames, "frames", 1)
        finite_at_least(self.depth_weight, "depth_weight", 0.0)
        require(self.guidance.strip() != "", "guidance", "give procedural, a diffusers checkpoint folder or none")
        if self.model == "field" and self.depth is not None:
            raise ConfigError("--depth", "depth ranking lifts Gaussians only (--model gaussians)")
        if self.image is None:  # text-to-3D
            if not (self.prompt.strip() or self.distill.prompt.strip()):
                raise ConfigError("IMAGE", "give an image of the object, or --prompt TEXT for text-to-3D")
            require(self.guidance not in ("none", "procedural"), "guidance",
                    f"{self.guidance} cannot lift a prompt alone: give a text-to-image checkpoint folder (Stable Diffusion layout)")  # fmt: skip
            if self.mask is not None or self.depth is not None:
                raise ConfigError("IMAGE", "--mask and --depth describe an image: give it too")


@dataclass(frozen=True)
class LiftPriorTrain:
    """Trains the lifting prior of our own (a 64x64 denoiser conditioned on another view of the
    object and the camera change) on renders of procedural arrangements; saves it in diffusers'
    layout for --guidance. Runs again from where it stopped (Ctrl-C saves)."""

    out: Path = Path("runs/lift-prior")
    """Output folder: prior/ (the checkpoint, diffusers layout), data.npz (the rendered views), state.pt (to resume)."""
    arrangements: int = 2000
    """Training arrangements (seeds from data.arrangements.TRAIN_SEED_START)."""
    views: int = 8
    """Rendered views per arrangement (pairs are drawn among them)."""
    size: int = 64
    """Image size."""
    steps: int = 100_000
    """Training steps at most (--minutes usually stops it first)."""
    minutes: Optional[float] = None
    """Stop after this many minutes of training (None: --steps)."""
    batch: int = 16
    """Pairs per step."""
    lr: float = 2e-4
    """Adam learning rate."""
    prediction: Literal["epsilon", "v_prediction", "sample"] = "sample"
    """What the UNet predicts: the clean view (sample: its error counts the same at every noise
    level, so the view a camera change gives is learnt at high noise, where SDS leans on it),
    v, or the noise (which neglects high noise)."""
    ema: float = 0.999
    """Decay of the exponential moving average of the weights (what is saved)."""
    save_every: int = 200
    """Save the checkpoint every N steps."""
    seed: int = 0
    """Seed of the views, pairs, noise and the network's start."""
    threads: Optional[int] = None
    """torch.set_num_threads(T)."""

    def __post_init__(self) -> None:
        for name in ("arrangements", "steps", "batch", "save_every"):
            at_least(getattr(self, name), name, 1)
        at_least(self.views, "views", 2)
        require(self.size % 8 == 0 and self.size >= 16, "size", f"must be a multiple of 8, at least 16 (got {self.size})")
        if self.minutes is not None:
            finite_at_least(self.minutes, "minutes", 0.0, strict=True)
        finite_at_least(self.lr, "lr", 0.0, strict=True)
        require(0.0 <= self.ema < 1.0, "ema", f"must be in [0, 1) (got {self.ema})")
        at_least(self.threads, "threads", 1)


@dataclass(frozen=True)
class LiftPriorShow:
    """Says what a prior folder holds: how it is conditioned, its size, and the steps, time
    and command that trained it."""

    prior: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PRIOR")]
    """A prior folder (lift-prior train's out/prior), or procedural (the shipped one)."""
