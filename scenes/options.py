"""The options of a run, declared once: parsed by ``splatfield train`` (tyro), saved as the
run's ``config.yaml`` and validated again when it is read back.

:class:`RunConfig` is made of sections, one per part of the program that runs it: the
dataset (:class:`DataConfig`), the scene (:class:`GaussianConfig`), the loop
(:class:`TrainerConfig`), the strategies (their own options in
:mod:`.strategies.options`) and the run directory's outputs (:class:`OutputConfig`).
Torch-free, so that the command line parses without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Optional

from .config import ConfigError, at_least, finite_at_least, from_dict, require, to_dict
from .strategies.options import (
    DENSIFYING, AdcConfig, DepthRankConfig, DistillConfig, ElasticConfig, SteepestConfig, StrategyName,
)  # fmt: skip

SceneKind = Literal["gaussians", "field"]
CameraOptMode = Literal["off", "pose", "pose+intrinsics"]
CameraPivot = Literal["scene", "camera"]
AppearanceMode = Literal["none", "affine", "bilateral"]
CONFIG_VERSION = 2


@dataclass(frozen=True)
class DataConfig:
    """How the run's dataset is read (its path is the run's ``data``)."""

    downscale: float = 1.0
    """Divide the image size by this (cached resized images)."""
    test_every: int = 8
    """Every n-th frame is a test view when the dataset has no split of its own (0: none)."""
    masks: str = "auto"
    """auto (the dataset file's mask paths, else its masks/ folder, found as <name>,
    <name>.png, <stem>.png or <stem>_mask.*), none, or a folder of masks (white = kept/object)."""
    mask_mode: Literal["auto", "ignore", "object"] = "auto"
    """What masks mean: ignore (black pixels are left out of the loss) or object (the
    object's silhouette: images composited over the background, rendered alpha trained
    towards it); auto: object for NeRD's <stem>_mask naming, else ignore."""
    lens_distortion: Literal["given", "ignore"] = "given"
    """given: undistort the photos with the dataset's distortion coefficients (OPENCV,
    fisheye); ignore: use them as they are, pinhole (for a calibration whose coefficients do
    not fit its photos, as instant-ngp's fox: docs/TRAINING.md)."""
    min_sharpness: Optional[float] = None
    """Drop training frames whose sharpness is below this (the score the log shows: the
    variance of the Laplacian at 512 px, or transforms.json's own sharpness field; None: off)."""
    min_relative_sharpness: Optional[float] = None
    """Drop training frames whose sharpness is below this fraction of the training frames'
    median, in (0, 1] (0.5 is a good start for a hand-held capture; None: off)."""

    train_pose_noise: tuple[float, float] = (0.0, 0.0)
    """Perturb every training pose by this rotation (degrees) and this shift of its centre (a
    fraction of the scene extent), in seeded random directions (--pose-noise-seed): a test of
    --camera-opt on a dataset whose poses are right. Test poses stay as given."""
    pose_noise_seed: int = 0
    """Seed of the directions of --train-pose-noise."""

    def __post_init__(self) -> None:
        finite_at_least(self.downscale, "downscale", 1.0)
        require(len(self.train_pose_noise) == 2, "train_pose_noise", "give degrees and a fraction of the extent")
        for v in self.train_pose_noise:
            finite_at_least(v, "train_pose_noise", 0.0)
        at_least(self.test_every, "test_every", 0)
        require(self.masks.strip() != "", "masks", "give auto, none or a folder of masks")
        if self.min_sharpness is not None:
            finite_at_least(self.min_sharpness, "min_sharpness", 0.0, strict=True)
        if self.min_relative_sharpness is not None:
            v = self.min_relative_sharpness
            require(0.0 < v <= 1.0, "min_relative_sharpness", f"a fraction of the median lies in (0, 1] (got {v:g})")


@dataclass(frozen=True)
class GaussianConfig:
    """A Gaussian scene's start and spherical harmonics."""

    sh_degree: Literal[0, 1, 2, 3] = 3
    """Highest spherical-harmonics degree (grown by one every 1000 steps)."""
    init_points: int = 100_000
    """Random initial points when the dataset has no SfM points."""
    init_half_size: Optional[float] = None
    """Half size of the cube of random initial points around the cameras' look-at centre (None: extent / 3)."""

    def __post_init__(self) -> None:
        at_least(self.init_points, "init_points", 1)
        if self.init_half_size is not None:
            finite_at_least(self.init_half_size, "init_half_size", 0.0, strict=True)


@dataclass(frozen=True)
class FieldConfig:
    """A radiance field's grid, sampling and learning rates (docs/FIELD.md)."""

    resolution: int = 256
    """Cells along the grid box's longest side at the end (the grid starts coarser)."""
    grow_at: tuple[int, ...] = (200, 600)
    """Steps at which the grid doubles its resolution (each growth keeps the cells near occupied ones)."""
    box_half_size: Optional[float] = None
    """Half size of the grid's cube around the cameras' look-at centre (None: extent / 3, or the
    dataset's own box: transforms.json's aabb_scale)."""
    head: Literal["sh", "mlp"] = "sh"
    """How a sample's colour is made: sh (spherical harmonics in the grid, no network; fused
    native rendering) or mlp (grid features read by a small network, DVGO-style)."""
    sh_degree: Literal[0, 1, 2, 3] = 1
    """Spherical-harmonics degree of the colour (2 costs twice the memory traffic per sample);
    with the mlp head, of the view direction's encoding."""
    features: int = 12
    """Grid features per vertex read by the mlp head."""
    mlp_width: int = 64
    """Hidden width of the mlp head (two hidden layers)."""
    mlp_lr: float = 1e-3
    """Adam learning rate of the mlp head's weights (decays like the grid's)."""
    rays: int = 4096
    """Rays per step (times --batch-size), drawn across all training views."""
    step_ratio: float = 0.5
    """Distance between samples along a ray, in cells."""
    init_alpha: float = 0.02
    """Alpha of one sample of the coarse grid at the start (must reach 1/255 to train)."""
    density_lr: float = 0.1
    """Adam learning rate of the raw densities (decays to lr_final_ratio times it)."""
    color_lr: float = 0.1
    """Adam learning rate of the colour table (SH coefficients or the MLP head's features)."""
    lr_final_ratio: float = 0.1
    """The learning rates' exponential decay reaches this fraction at the last step."""
    occupancy_every: int = 16
    """Steps between updates of the occupancy bitfield."""
    tv_weight: float = 0.0
    """Weight of the total-variation penalty on densities at random vertices."""
    background_model: Literal["auto", "fixed", "envmap"] = "auto"
    """What a ray sees past the grid: fixed (the run's background colour, e.g. Blender's white),
    envmap (a learned colour per view direction, for real captures whose far scenery lies
    outside the box), or auto (envmap when the capture has no known background)."""
    envmap_height: int = 64
    """Texels from pole to pole of the learned background (twice as many around)."""
    envmap_lr: float = 0.05
    """Adam learning rate of the learned background's texels (decays like the grid's)."""

    def __post_init__(self) -> None:
        at_least(self.resolution, "resolution", 4)
        require(all(s >= 1 for s in self.grow_at), "grow_at", "steps must be >= 1")
        require(list(self.grow_at) == sorted(set(self.grow_at)), "grow_at", "steps must increase")
        require(self.resolution >> len(self.grow_at) >= 2, "grow_at",
                f"too many growths for --field.resolution {self.resolution}")  # fmt: skip
        if self.box_half_size is not None:
            finite_at_least(self.box_half_size, "box_half_size", 0.0, strict=True)
        at_least(self.rays, "rays", 1)
        finite_at_least(self.step_ratio, "step_ratio", 0.0, strict=True)
        require(1.0 / 255.0 < self.init_alpha < 1.0, "init_alpha", f"must be in (1/255, 1) (got {self.init_alpha})")
        finite_at_least(self.density_lr, "density_lr", 0.0)
        finite_at_least(self.color_lr, "color_lr", 0.0)
        at_least(self.features, "features", 1)
        at_least(self.mlp_width, "mlp_width", 1)
        finite_at_least(self.mlp_lr, "mlp_lr", 0.0)
        require(0.0 < self.lr_final_ratio <= 1.0, "lr_final_ratio", f"must be in (0, 1] (got {self.lr_final_ratio})")
        at_least(self.occupancy_every, "occupancy_every", 1)
        finite_at_least(self.tv_weight, "tv_weight", 0.0)
        at_least(self.envmap_height, "envmap_height", 2)
        finite_at_least(self.envmap_lr, "envmap_lr", 0.0)


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop."""

    steps: int = 7000
    """Training steps (one view per step)."""
    seed: int = 0
    """Seed of the initial points, view order and density control."""
    ssim_weight: float = 0.2
    """Weight of the D-SSIM term in the photometric loss (the rest is L1)."""
    batch_size: int = 1
    """Training views per step, rendered together; their losses are averaged, learning rates
    scaled by sqrt(B) and Adam's betas by gsplat's rule (docs/TRAINING.md)."""

    mask_alpha_weight: float = 0.5
    """Weight of the L1 between the rendered alpha and an object mask (--dataset.mask-mode
    object): what keeps Gaussians out of the background."""

    def __post_init__(self) -> None:
        at_least(self.steps, "steps", 1)
        at_least(self.batch_size, "batch_size", 1)
        require(0.0 <= self.ssim_weight <= 1.0, "ssim_weight", f"must be in [0, 1] (got {self.ssim_weight})")
        finite_at_least(self.mask_alpha_weight, "mask_alpha_weight", 0.0)


@dataclass(frozen=True)
class CorrectionConfig:
    """Per-view corrections learned with a Gaussian scene (real captures; docs/TRAINING.md)."""

    camera_opt: CameraOptMode = "off"
    """Refine the training cameras with the scene: pose (a rotation and translation per
    camera), pose+intrinsics (also focal length and principal point per physical camera)."""
    camera_pose_lr: float = 1e-4
    """Adam learning rate of the pose corrections (radians; translations in scene extents),
    decaying to --camera-lr-final-ratio of it over the run. 1e-4 suits poses that are nearly
    right (a real capture's SfM or calibration); poses off by about a degree need 5e-4."""
    camera_intrinsics_lr: float = 1e-4
    """Adam learning rate of the log focal-length factor and the principal point (in image sizes)."""
    camera_lr_final_ratio: float = 0.01
    """The camera learning rates decay exponentially to this fraction of their start over the run."""
    camera_pivot: CameraPivot = "scene"
    """What a pose correction turns the camera about: scene, a point on its optical axis at
    the median depth of the initial points it sees (a turn then leaves the scene where it
    is in the image, a translation shifts it: Adam gets the two apart); camera, its centre."""
    camera_reg: float = 1e-3
    """Weight of the L2 regulariser on the corrections."""
    align_steps: int = 30
    """With camera refinement: test-time alignment steps per test view (their poses fitted with
    the scene frozen) for the aligned metrics; 0: off."""
    appearance: AppearanceMode = "none"
    """Per-training-image colour correction (exposure, white balance): an affine colour
    transform, or a bilateral grid of them over position and brightness. Off for synthetic data."""
    appearance_lr: Optional[float] = None
    """Adam learning rate of the appearance corrections (None: the mode's default)."""

    def __post_init__(self) -> None:
        for name in ("camera_pose_lr", "camera_intrinsics_lr"):
            finite_at_least(getattr(self, name), name, 0.0, strict=True)
        finite_at_least(self.camera_reg, "camera_reg", 0.0)
        require(0.0 < self.camera_lr_final_ratio <= 1.0, "camera_lr_final_ratio",
                f"must be in (0, 1] (got {self.camera_lr_final_ratio})")  # fmt: skip
        at_least(self.align_steps, "align_steps", 0)
        if self.appearance_lr is not None:
            finite_at_least(self.appearance_lr, "appearance_lr", 0.0, strict=True)

    @property
    def active(self) -> bool:
        return self.camera_opt != "off" or self.appearance != "none"


def check_corrections(scene_kind: str, corrections: CorrectionConfig) -> None:
    require(scene_kind == "gaussians" or not corrections.active,
            "camera_opt" if corrections.camera_opt != "off" else "appearance",
            "camera refinement and per-image appearance train with Gaussians only (--model gaussians)")  # fmt: skip


@dataclass(frozen=True)
class OutputConfig:
    """What the run directory receives while and after training."""

    checkpoint_every: int = 1000
    """Steps between checkpoints (0: only at the end and on Ctrl-C)."""
    keep_checkpoints: int = 3
    """Checkpoints kept (the newest)."""
    eval: bool = True
    """Evaluate on the test views when training finishes."""
    save_renders: bool = True
    """Save the evaluated test views under renders/."""

    def __post_init__(self) -> None:
        at_least(self.checkpoint_every, "checkpoint_every", 0)
        at_least(self.keep_checkpoints, "keep_checkpoints", 1)


def check_strategies(names: tuple[str, ...]) -> tuple[str, ...]:
    """The strategies to run, in order; ``none`` alone means none."""
    require(len(names) > 0, "strategy", "name at least one (or none)")
    if "none" in names:
        require(names == ("none",), "strategy", "none cannot be combined with other strategies")
        return ()
    require(len(set(names)) == len(names), "strategy", f"a strategy is named twice ({' '.join(names)})")
    dens = [n for n in names if n in DENSIFYING]
    require(len(dens) <= 1, "strategy", f"{' and '.join(dens)} both add and remove Gaussians: choose one")
    return names


@dataclass(frozen=True)
class RunConfig:
    """Everything a run was made with (its ``config.yaml``): enough to resume or repeat it."""

    data: str
    """The dataset (as given to the loader)."""
    out: str = ""
    """The run directory."""
    scene_kind: SceneKind = "gaussians"
    strategy: tuple[StrategyName, ...] = ("adc",)
    dataset: DataConfig = field(default_factory=DataConfig)
    scene: GaussianConfig = field(default_factory=GaussianConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)
    adc: AdcConfig = field(default_factory=AdcConfig)
    steepest: SteepestConfig = field(default_factory=SteepestConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    depth_rank: DepthRankConfig = field(default_factory=DepthRankConfig)
    corrections: CorrectionConfig = field(default_factory=CorrectionConfig)
    field: FieldConfig = field(default_factory=FieldConfig)  # (shadows dataclasses.field below this line)

    def __post_init__(self) -> None:
        check_strategies(tuple(self.strategy))
        check_corrections(self.scene_kind, self.corrections)

    @property
    def strategies(self) -> tuple[str, ...]:
        """The strategies that run (``none`` is none)."""
        return check_strategies(tuple(self.strategy))

    def to_document(self) -> dict:
        return {"splatfield_run": {"version": CONFIG_VERSION, **to_dict(self)}}

    @classmethod
    def from_document(cls, doc: Any) -> RunConfig:
        """From a parsed ``config.yaml``: this layout, or the first one (flat ``splatfield_train``)."""
        if isinstance(doc, dict) and "splatfield_train" in doc:
            return _from_first_layout(doc["splatfield_train"])
        if not isinstance(doc, dict) or not isinstance(doc.get("splatfield_run"), dict):
            raise ConfigError("splatfield_run", "missing (not a splatfield run config)")
        body = dict(doc["splatfield_run"])
        version = body.pop("version", None)
        require(version == CONFIG_VERSION, "version", f"{version!r} is not a layout this splatfield reads ({CONFIG_VERSION})")
        return from_dict(cls, body, "")


# ----------------------------------------------------------------------------- resume


# Options that a resumed run may change; every other one is fixed by what the run was made with.
RESUMABLE: frozenset[str] = frozenset({"trainer.steps", "outputs.checkpoint_every", "outputs.keep_checkpoints", "outputs.eval",
                                       "corrections.align_steps"})  # fmt: skip


def option_paths(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf option as ``section.field`` -> value."""
    out: dict[str, Any] = {}
    for f in fields(config):
        v = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if hasattr(v, "__dataclass_fields__"):
            out.update(option_paths(v, key + "."))
        else:
            out[key] = v
    return out


def with_options(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``config`` with the ``section.field`` options in ``values`` replaced."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, v in values.items():
        head, _, rest = key.partition(".")
        if rest:
            sections.setdefault(head, {})[rest] = v
        else:
            top[head] = v
    for head, changes in sections.items():
        top[head] = replace(getattr(config, head), **changes)
    return replace(config, **top)


def _from_first_layout(flat: Any) -> RunConfig:
    """The flat ``splatfield_train`` layout of runs made before the options were sectioned."""
    if not isinstance(flat, dict):
        raise ConfigError("splatfield_train", "expected a mapping")
    where = {
        "data": "data", "out": "out", "strategy": "strategy", "steps": "trainer.steps", "seed": "trainer.seed",
        "downscale": "dataset.downscale", "test_every": "dataset.test_every", "sh_degree": "scene.sh_degree",
        "init_points": "scene.init_points", "init_half_size": "scene.init_half_size",
        "checkpoint_every": "outputs.checkpoint_every", "keep_checkpoints": "outputs.keep_checkpoints",
        "evaluate": "outputs.eval", "save_renders": "outputs.save_renders",
        "split_threshold": "steepest.split_threshold", "split_grad_gate": "steepest.split_grad_gate",
        "split_displacement": "steepest.split_displacement", "max_splits": "steepest.max_splits",
        "projection_curvature": "steepest.projection_curvature", "split_criterion": "steepest.split_criterion",
    }  # fmt: skip
    unknown = sorted(set(flat) - set(where))
    if unknown:
        raise ConfigError(f"splatfield_train.{unknown[0]}", "unknown option")
    doc: dict[str, Any] = {}
    for key, v in flat.items():
        head, _, rest = where[key].partition(".")
        if rest:
            doc.setdefault(head, {})[rest] = v
        else:
            doc[head] = [v] if head == "strategy" else v
    return from_dict(RunConfig, doc, "")


# Sections whose options are named plainly (``--steps``); the density control's carry its name
# (``--adc.refine-every``), since steepest shares them and a plain ``--refine-every`` would hide that;
# the radiance field's, the elastic phase's and distillation's too (``--field.resolution``,
# ``--elastic.hidden``, ``--distill.guidance``).
PLAIN_SECTIONS = ("dataset", "scene", "trainer", "outputs", "steepest", "corrections")
PREFIXED_SECTIONS = ("adc", "field", "elastic", "distill", "depth_rank")


def option_names() -> dict[str, str]:
    """Each section option's name on the command line (without ``--``, underscores kept) ->
    its place in :class:`RunConfig` (``split_threshold`` -> ``steepest.split_threshold``,
    ``adc.refine_every`` -> ``adc.refine_every``)."""
    sections = {f.name: f.default_factory() for f in fields(RunConfig) if f.name in PLAIN_SECTIONS + PREFIXED_SECTIONS}  # type: ignore[misc]
    out = {}
    for section, value in sections.items():
        for f in fields(value):
            path = f"{section}.{f.name}"
            out[path if section in PREFIXED_SECTIONS else f.name] = path
    return out


def run_config(data: str, out: str = "", strategy: tuple[str, ...] | None = None, scene_kind: str = "gaussians",
               **options: Any) -> RunConfig:  # fmt: skip
    """A :class:`RunConfig` from the options' names as on the command line (``steps=2000,
    downscale=8, split_threshold=1e-8``; the density control's as ``adc_refine_every=50``,
    the field's as ``field_resolution=64``). The strategy defaults to the kind's: ``adc`` for
    Gaussians, none for a field."""
    if strategy is None:
        strategy = ("adc",) if scene_kind == "gaussians" else ("none",)
    where = {name.replace(".", "_"): path for name, path in option_names().items()}
    unknown = sorted(set(options) - set(where))
    if unknown:
        raise ConfigError(unknown[0], "unknown option")
    base = RunConfig(data=data, out=out, scene_kind=scene_kind, strategy=tuple(strategy))  # type: ignore[arg-type]
    return with_options(base, {where[k]: v for k, v in options.items()})
