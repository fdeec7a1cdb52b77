"""The strategies' options, declared once (parsed by the command line, saved in config.yaml).

Kept free of torch so that parsing the command line stays fast; the strategies themselves
are in :mod:`.adc`, :mod:`.steepest` and built by :mod:`.registry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Optional

from ..config import at_least, finite_at_least, require

StrategyName = Literal["adc", "steepest", "elastic", "distill", "depth_rank", "none"]
DepthKind = Literal["disparity", "depth"]
Estimator = Literal["sds", "vsd", "esd", "stein"]
AdapterKind = Literal["lora", "copy"]
SplitCriterion = Literal["curvature", "loss-change"]

# Strategies that add and remove Gaussians; two of them would edit the same scene twice per step.
DENSIFYING: frozenset[str] = frozenset({"adc", "steepest"})


def refine_stop_for(steps: int) -> int:
    """Densification (and with it the opacity resets) stops at 15k steps as in 3DGS, or at 70%
    of a shorter run: a reset or a fresh split in the last steps leaves the scene no time to
    recover (a 7k run would otherwise reset opacities at step 6000)."""
    return min(15_000, round(0.7 * steps))


@dataclass(frozen=True)
class AdcConfig:
    """The 3DGS adaptive density control (also the schedule and pruning of ``steepest``)."""

    grad_threshold: float = 2e-4
    """Clone or split where the view-averaged NDC gradient of the mean is at least this."""
    refine_start: int = 500
    """First densification step."""
    refine_stop: Optional[int] = None
    """Densification and opacity resets stop here (None: 15000, or 70% of a shorter run)."""
    refine_every: int = 100
    """Steps between densifications."""
    reset_every: int = 3000
    """Steps between opacity resets."""
    reset_opacity: float = 0.01
    """Opacities are clamped to this at a reset."""
    prune_opacity: float = 0.005
    """Gaussians below this opacity are removed at each densification."""
    clone_scale: float = 0.01
    """Clone (rather than split) Gaussians at most this large, as a fraction of the scene extent."""
    split_scale_divisor: float = 1.6
    """Offspring scales are the parent's divided by this."""
    # Off by default: the INRIA code clears its max-radius record just before this test,
    # so its published figures come without it; at 20 px it punched holes into lego's
    # close-up regions (test PSNR at step 4000: 25.8 dB with it, 31.1 dB without).
    prune_screen_px: Optional[float] = None
    """After the first reset, also prune Gaussians wider than this on screen (None: off)."""
    prune_world: float = 0.1
    """After the first reset, prune Gaussians larger than this fraction of the scene extent."""
    reset_at_refine_start: Optional[bool] = None
    """Also reset opacities at refine-start (None: on white-background captures, as 3DGS)."""
    max_gaussians: Optional[int] = None
    """Densification (adc's clones and splits, steepest's splits) never takes the count above this;
    when it would, only the strongest candidates that fit are densified; pruning goes on as usual
    (None: no cap). A scene that starts above it is not pruned down to it: nothing is added."""

    def __post_init__(self) -> None:
        finite_at_least(self.grad_threshold, "adc.grad_threshold", 0.0)
        at_least(self.refine_start, "adc.refine_start", 0)
        at_least(self.refine_stop, "adc.refine_stop", 0)
        at_least(self.refine_every, "adc.refine_every", 1)
        at_least(self.reset_every, "adc.reset_every", 1)
        for name in ("reset_opacity", "prune_opacity"):
            v = getattr(self, name)
            require(0.0 <= v < 1.0, f"adc.{name}", f"must be in [0, 1) (got {v})")
        finite_at_least(self.clone_scale, "adc.clone_scale", 0.0)
        finite_at_least(self.split_scale_divisor, "adc.split_scale_divisor", 1.0)
        if self.prune_screen_px is not None:
            finite_at_least(self.prune_screen_px, "adc.prune_screen_px", 0.0, strict=True)
        finite_at_least(self.prune_world, "adc.prune_world", 0.0, strict=True)
        at_least(self.max_gaussians, "adc.max_gaussians", 1)

    def resolved(self, steps: int | None, white_background: bool = False) -> AdcConfig:
        """The automatic values filled in for a run of ``steps`` (None: 3DGS's 15000)."""
        stop = self.refine_stop if self.refine_stop is not None else (15_000 if steps is None else refine_stop_for(steps))
        reset = self.reset_at_refine_start if self.reset_at_refine_start is not None else white_background
        return replace(self, refine_stop=stop, reset_at_refine_start=reset)


@dataclass(frozen=True)
class SteepestConfig:
    """Steepest-descent splitting (SteepGS); its schedule and pruning are ``adc``'s."""

    # λ in units of the loss per squared fraction of the scene extent (S itself is in loss per
    # squared world unit; S per view does not depend on the resolution): the paper's ε. Most
    # Gaussians have some negative curvature (81-94% on lego and fox), so without the gradient
    # gate ε must be far larger (0.1 on lego, about its 10th percentile): docs/TRAINING.md.
    split_threshold: float = 1e-6
    """Split where the smallest eigenvalue of the splitting matrix times extent^2 is below minus
    this (without the gradient gate use a far larger one, e.g. 0.1 on lego)."""
    # On by default: on lego it gave 58% of adc's Gaussians at +0.17 dB; without it (ε = 0.1), 56% at −1.5 dB.
    split_grad_gate: bool = True
    """Also require the 3DGS gradient test (average NDC gradient >= 2e-4)."""
    split_displacement: float = 1.0
    """Offspring at mu +- this many standard deviations along the eigenvector (a trust-region step)."""
    max_splits: Optional[int] = None
    """At most N splits per densification step, most negative first (None: no budget)."""
    projection_curvature: bool = True
    """Include the projection's curvature term in the splitting matrix."""
    split_criterion: SplitCriterion = "curvature"
    """Compare --split-threshold with the smallest eigenvalue times extent^2 (curvature), or with
    the split's predicted loss change 1/2 delta^2 lambda_min (loss-change, scale-free; thresholds
    near 1e-8)."""

    def __post_init__(self) -> None:
        finite_at_least(self.split_threshold, "split_threshold", 0.0)
        finite_at_least(self.split_displacement, "split_displacement", 0.0, strict=True)
        at_least(self.max_splits, "max_splits", 0)


@dataclass(frozen=True)
class ElasticConfig:
    """Elastic model size (FlexGS, METHODS.md §3): a selector and a transform trained in the
    last part of the run, so the scene can be served at any size ratio (docs/TRAINING.md)."""

    start: Optional[int] = None
    """First step of the elastic phase (None: where densification stops, --adc.refine-stop; step 1
    without a densifying strategy)."""
    ratio_min: float = 0.01
    """Smallest size ratio drawn for training (log-uniform in [ratio_min, 1])."""
    weight: float = 1.0
    """Weight of the reduced render's photometric loss (trains the selector and transform only)."""
    hidden: int = 32
    """Hidden width of the selector and transform networks (two hidden layers each)."""
    lr: float = 1e-3
    """Adam learning rate of the selector and transform."""
    temperature: float = 1.0
    """Temperature of the soft keep whose gradient the straight-through mask carries."""
    selector_range: float = 0.2
    """How far the selector may move a Gaussian's score from its log-importance, in standard
    deviations of the log-importance (0: rank by importance, train the transform only)."""
    transform: Literal["mlp", "table"] = "table"
    """How a kept Gaussian changes at r: mlp (a small network of its features and log r: position,
    scale, rotation, opacity) or table (its own learnt changes at the knot ratios, colour too,
    piecewise-linear in log r between them; 14 floats per Gaussian and knot)."""
    knots: tuple[float, ...] = (0.5, 0.25, 0.1, 0.05, 0.01)
    """With --elastic.transform table: the ratios of the table's knots (descending, below 1)."""
    table_lr: float = 5e-3
    """With --elastic.transform table: its Adam rate (the 3DGS rate of the log-scales; the other
    quantities move at their 3DGS rates relative to it)."""
    seed: int = 0
    """Seed of the networks' start and of the drawn ratios."""

    def __post_init__(self) -> None:
        at_least(self.start, "elastic.start", 1)
        require(0.0 < self.ratio_min <= 1.0, "elastic.ratio_min", f"must be in (0, 1] (got {self.ratio_min})")
        finite_at_least(self.weight, "elastic.weight", 0.0)
        at_least(self.hidden, "elastic.hidden", 1)
        finite_at_least(self.lr, "elastic.lr", 0.0, strict=True)
        finite_at_least(self.temperature, "elastic.temperature", 0.0, strict=True)
        finite_at_least(self.selector_range, "elastic.selector_range", 0.0)
        require(len(self.knots) > 0 and list(self.knots) == sorted(set(self.knots), reverse=True)
                and 0.0 < self.knots[-1] and self.knots[0] < 1.0, "elastic.knots",
                f"must be descending ratios in (0, 1) (got {self.knots})")  # fmt: skip
        finite_at_least(self.table_lr, "elastic.table_lr", 0.0, strict=True)


@dataclass(frozen=True)
class DistillConfig:
    """Score distillation (METHODS.md §4, docs/LIFTING.md): every step, random views on a
    sphere around the world origin are rendered and pushed toward what a diffusion prior finds
    likely, beside the photometric loss of the training views."""

    guidance: str = ""
    """A diffusers checkpoint folder (unet/, scheduler/, optional vae/; read locally, never
    downloaded), or procedural (the shipped prior of our own): required with --strategy distill."""
    prompt: str = ""
    """What the views should show, for a text-to-image checkpoint (through its text_encoder/
    and tokenizer/); the procedural prior takes the reference view instead."""
    negative_prompt: str = ""
    """The prompt classifier-free guidance steers away from ("" is the unconditional prediction)."""
    estimator: Estimator = "sds"
    """sds (score distillation sampling), vsd (variational: a second model adapted to the
    renders), esd (vsd plus the entropy of the renders over all cameras, --distill.entropy-weight)
    or stein (sds plus a Stein control variate with a fitted coefficient: the same mean, less variance)."""
    weighting: Literal["sigma2", "one"] = "sigma2"
    """w(t) in the gradient: sigma2 (sigma_t^2, DreamFusion's) or one (constant: more weight on low noise)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance s in eps_u + s (eps_c - eps_u): 1 is the conditional prediction alone."""
    entropy_weight: float = 0.5
    """ESD's lambda in [0, 1] (0 is vsd)."""
    # The photometric loss is a mean over pixels, the distillation loss a sum over the render's
    # values: DreamGaussian weighs its reference MSE 1e4 against SDS 1, i.e. 1e-4 here. A
    # starting point from their balance, not tuned on a real prior here.
    weight: float = 1e-4
    """Weight of the distillation loss (the sum over the render's values of 1/2 |x - stopgrad(x - grad)|^2,
    per view) against the photometric loss (a mean over pixels)."""
    views: int = 1
    """Random views per step."""
    t_range: tuple[float, float] = (0.02, 0.98)
    """Timesteps drawn in this range (fractions of the schedule) at the start ..."""
    t_max_end: float = 0.5
    """... with the upper end moved linearly to this by the end of the run (NeuralLift-360's annealing)."""
    elevation: tuple[float, float] = (-10.0, 45.0)
    """Elevation range of the random views in degrees, above the plane through the origin
    orthogonal to the training cameras' mean up direction."""
    up: Optional[tuple[float, float, float]] = None
    """The world's up direction (None: the training cameras' mean up; lift gives 0 0 1: a
    single camera's own up is tilted by its elevation)."""
    radius: Optional[float] = None
    """Distance of the random views from the origin (None: the training cameras' mean)."""
    fov: Optional[float] = None
    """Vertical field of view of the random views in degrees (None: the training cameras')."""
    adapter: AdapterKind = "lora"
    """vsd/esd's second model: lora (low-rank updates of the guidance's attention) or copy (a
    trainable copy of the UNet, for small models)."""
    lora_rank: int = 4
    """Rank of the low-rank updates."""
    model_lr: float = 1e-3
    """Adam learning rate of the second model."""
    reference_probability: tuple[float, float] = (1.0, 1.0)
    """Probability that a step also fits the training views (their photometric and mask
    losses), moved linearly from the first value to the second over the run (NeuralLift-360
    draws its reference view with a decaying probability); 0 0 is the distillation alone
    (text-to-3D)."""
    stein_bands: int = 10
    """stein: the control variate's coefficient is fitted per band of timesteps (this many, equal)."""
    stein_decay: float = 0.98
    """stein: decay per step of the averages the coefficient is fitted on (earlier steps only)."""
    stein_depth: str = ""
    """stein: a monocular depth model folder (transformers AutoModelForDepthEstimation: DPT,
    Depth Anything...; read locally): the baseline is the agreement of its estimate of the
    noisy view with the render's depth (SteinDreamer's). Empty: the constant baseline."""
    seed: int = 0
    """Seed of the random views, timesteps and noise."""

    def __post_init__(self) -> None:
        finite_at_least(self.guidance_scale, "distill.guidance_scale", 0.0)
        at_least(self.stein_bands, "distill.stein_bands", 1)
        require(not self.stein_depth or self.estimator == "stein", "distill.stein_depth", "is the baseline of --distill.estimator stein")
        require(all(0.0 <= p <= 1.0 for p in self.reference_probability), "distill.reference_probability",
                f"must be two probabilities in [0, 1] (got {self.reference_probability})")  # fmt: skip
        require(0.0 <= self.stein_decay < 1.0, "distill.stein_decay", f"must be in [0, 1) (got {self.stein_decay})")
        require(0.0 <= self.entropy_weight <= 1.0, "distill.entropy_weight", f"must be in [0, 1] (got {self.entropy_weight})")
        finite_at_least(self.weight, "distill.weight", 0.0)
        at_least(self.views, "distill.views", 1)
        lo, hi = self.t_range
        require(0.0 <= lo < hi <= 1.0, "distill.t_range", f"must be 0 <= low < high <= 1 (got {lo} {hi})")
        require(lo < self.t_max_end <= 1.0, "distill.t_max_end", f"must be in (t_range low, 1] (got {self.t_max_end})")
        require(-90.0 <= self.elevation[0] <= self.elevation[1] <= 90.0, "distill.elevation",
                f"must be low <= high within [-90, 90] degrees (got {self.elevation[0]} {self.elevation[1]})")  # fmt: skip
        if self.up is not None:
            require(len(self.up) == 3 and all(math.isfinite(v) for v in self.up) and any(v != 0 for v in self.up),
                    "distill.up", f"must be three finite numbers, not all zero (got {self.up})")  # fmt: skip
        if self.radius is not None:
            finite_at_least(self.radius, "distill.radius", 0.0, strict=True)
        if self.fov is not None:
            require(0.0 < self.fov < 180.0, "distill.fov", f"must be in (0, 180) degrees (got {self.fov})")
        at_least(self.lora_rank, "distill.lora_rank", 1)
        finite_at_least(self.model_lr, "distill.model_lr", 0.0, strict=True)


@dataclass(frozen=True)
class DepthRankConfig:
    """A depth map of one training view (a monocular estimate: only its order counts) whose
    near-far order the rendered depth is taught, on sampled pixel pairs (NeuralLift-360's
    ranking loss; ``lift --depth``)."""

    depth: str = ""
    """The depth map: an image (8- or 16-bit grey PNG, ...) or a .npy array, at any size
    (resized to the view's): required with --strategy depth_rank."""
    kind: DepthKind = "disparity"
    """disparity: larger is nearer (what MiDaS/DPT-style estimators write); depth: larger is farther."""
    view: int = 0
    """The training view it belongs to (its index; lift's reference is 0)."""
    weight: float = 1.0
    """Weight of the ranking loss against the photometric loss (the hinge is 0 once the order
    is right, so a large weight costs nothing then: lift's reference agrees on 80% of pairs
    with 1 and 3, 71% with 0.1, 65% without)."""
    pairs: int = 4096
    """Pixel pairs drawn per step (inside the view's object mask when it has one)."""
    seed: int = 0
    """Seed of the pairs."""

    def __post_init__(self) -> None:
        at_least(self.view, "depth_rank.view", 0)
        finite_at_least(self.weight, "depth_rank.weight", 0.0)
        at_least(self.pairs, "depth_rank.pairs", 1)
