"""Crop regions: a box (centre, size, rotation) and a sphere, a point-in-region test, and the
exact ``splatfield export`` options that name them.

This is the one definition of "inside" that ``export --crop-box/--crop-sphere``, the viewer's
crop box and the mesh export share: a point is inside a region when it lies in the closed
box (or ball); a Gaussian is inside when its mean is. With a box and a sphere both given, a
point must be inside both. The options text is exact: :meth:`CropRegion.options` writes
every number so that parsing it back gives the same floats (so the same kept set).

The box is ``--crop-box CX CY CZ SX SY SZ`` (centre, then the full edge lengths along the
box's own axes) and ``--crop-rotation QW QX QY QZ`` (the box's rotation, a quaternion w x y z
taking box axes to world axes, as viser's transform controls give it; normalised here, so
only its direction matters; default: no rotation). The sphere is ``--crop-sphere CX CY CZ R``.

Torch-free, and numpy is imported only when a point is tested: the command line builds
these while it parses, and parsing imports neither.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .config import ConfigError, finite_at_least, require

if TYPE_CHECKING:
    import numpy as np

IDENTITY = (1.0, 0.0, 0.0, 0.0)


def number_text(x: float) -> str:
    """``x`` written so that ``float()`` reads back the same float: six significant digits
    when they suffice (``0.25``, ``1.5e-05``), else Python's shortest exact form."""
    short = f"{x:.6g}"
    return short if float(short) == x else repr(float(x))


def tidy(x: float, digits: int = 6) -> float:
    """``x`` rounded to ``digits`` significant digits (what the viewer keeps of a dragged
    value, so that its options text stays short); never -0."""
    return float(f"{float(x):.{digits}g}") + 0.0


def _finite(values: Sequence[float], option: str, count: int, names: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(option, f"expects {count} numbers {names} (got {' '.join(map(str, values))})") from None
    if len(vals) != count:
        raise ConfigError(option, f"expects {count} numbers {names} (got {len(vals)})")
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(option, f"numbers must be finite (got {_words(vals)})")
    return vals


def _words(values: Sequence[float]) -> str:
    return " ".join(number_text(v) for v in values)


def rotation_matrix(wxyz: Sequence[float]) -> np.ndarray:
    """The 3x3 rotation of a quaternion w x y z (normalised first; not zero)."""
    import numpy as np

    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(np.asarray(wxyz, dtype=np.float64))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def _points(points: np.ndarray) -> np.ndarray:
    import numpy as np

    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be an (N, 3) array, got shape {p.shape}")
    return p


@dataclass(frozen=True)
class CropBox:
    """A box: ``centre``, full edge lengths ``size`` along its own axes, and ``rotation`` (w x y
    z, box axes to world axes; normalised when used)."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    rotation: tuple[float, float, float, float] = IDENTITY

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _finite(self.centre, "--crop-box", 3, "CX CY CZ (the centre)"))
        size = _finite(self.size, "--crop-box", 3, "SX SY SZ (the sizes)")
        if not all(s > 0 for s in size):
            raise ConfigError("--crop-box", f"sizes SX SY SZ must be > 0 (got {_words(size)})")
        object.__setattr__(self, "size", size)
        q = _finite(self.rotation, "--crop-rotation", 4, "QW QX QY QZ")
        norm = math.sqrt(sum(v * v for v in q))
        if not norm > 1e-9:
            raise ConfigError("--crop-rotation", f"the quaternion QW QX QY QZ is zero (got {_words(q)})")
        if not math.isfinite(norm):
            raise ConfigError("--crop-rotation", "the quaternion QW QX QY QZ is too large")
        object.__setattr__(self, "rotation", q)

    @property
    def matrix(self) -> np.ndarray:
        """Box axes to world axes (3x3; its columns are the box's axes in the world)."""
        return rotation_matrix(self.rotation)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """[N] bool: which of ``points`` (N, 3) lie in the closed box."""
        import numpy as np

        p = _points(points)
        local = (p - np.asarray(self.centre)) @ self.matrix  # world -> box axes: R^T (p - c)
        return np.all(np.abs(local) <= 0.5 * np.asarray(self.size), axis=1)

    def corners(self) -> np.ndarray:
        """The 8 corners (8, 3) in the world."""
        import numpy as np

        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        return np.asarray(self.centre) + (signs * 0.5 * np.asarray(self.size)) @ self.matrix.T

    def options(self) -> list[str]:
        args = ["--crop-box", *map(number_text, self.centre + self.size)]
        if self.rotation != IDENTITY:
            args += ["--crop-rotation", *map(number_text, self.rotation)]
        return args


@dataclass(frozen=True)
class CropSphere:
    """A ball: ``centre`` and ``radius``."""

    centre: tuple[float, float, float]
    radius: float

    def __post_init__(self) -> None:
        vals = _finite((*self.centre, self.radius), "--crop-sphere", 4, "CX CY CZ R")
        if not vals[3] > 0:
            raise ConfigError("--crop-sphere", f"radius R must be > 0 (got {number_text(vals[3])})")
        object.__setattr__(self, "centre", vals[:3])
        object.__setattr__(self, "radius", vals[3])

    def contains(self, points: np.ndarray) -> np.ndarray:
        """[N] bool: which of ``points`` (N, 3) lie in the closed ball."""
        import numpy as np

        d = _points(points) - np.asarray(self.centre)
        return np.einsum("ij,ij->i", d, d) <= self.radius * self.radius

    def options(self) -> list[str]:
        return ["--crop-sphere", *map(number_text, (*self.centre, self.radius))]


@dataclass(frozen=True)
class CropRegion:
    """What ``--crop-box``/``--crop-rotation``/``--crop-sphere`` keep: the points inside every
    shape given (no shape: everything). ``bool(region)`` is whether any shape is given."""

    box: CropBox | None = None
    sphere: CropSphere | None = None

    def __bool__(self) -> bool:
        return self.box is not None or self.sphere is not None

    @property
    def shapes(self) -> tuple[CropBox | CropSphere, ...]:
        return tuple(s for s in (self.box, self.sphere) if s is not None)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """[N] bool: which of ``points`` (N, 3) are inside (all of them for an empty region)."""
        import numpy as np

        p = _points(points)
        keep = np.ones(len(p), dtype=bool)
        for shape in self.shapes:
            keep &= shape.contains(p)
        return keep

    # --------------------------------------------------------------------- options text

    @classmethod
    def from_options(cls, crop_box: Sequence[float] | None = None, crop_rotation: Sequence[float] | None = None,
                     crop_sphere: Sequence[float] | None = None) -> CropRegion:  # fmt: skip
        """The region of the export options' values (as tyro parsed them); a bad value is a
        :class:`~.config.ConfigError` naming the option."""
        if crop_rotation is not None and crop_box is None:
            raise ConfigError("--crop-rotation", "rotates the --crop-box: give --crop-box too")
        box = None
        if crop_box is not None:
            vals = _finite(crop_box, "--crop-box", 6, "CX CY CZ SX SY SZ")
            turn = IDENTITY if crop_rotation is None else tuple(crop_rotation)
            box = CropBox(vals[:3], vals[3:], turn)  # type: ignore[arg-type]
        sphere = None
        if crop_sphere is not None:
            vals = _finite(crop_sphere, "--crop-sphere", 4, "CX CY CZ R")
            sphere = CropSphere(vals[:3], vals[3])  # type: ignore[arg-type]
        return cls(box, sphere)

    def options(self) -> list[str]:
        """The export options naming this region, exactly (``[]`` for an empty one)."""
        return [arg for shape in self.shapes for arg in shape.options()]

    def text(self) -> str:
        return " ".join(self.options())

    @classmethod
    def parse(cls, text: str | Sequence[str]) -> CropRegion:
        """The region named by options text (:meth:`text`, or a command line's words); other
        words are skipped."""
        words = shlex.split(text) if isinstance(text, str) else list(text)
        counts = {"--crop-box": 6, "--crop-rotation": 4, "--crop-sphere": 4}
        got: dict[str, list[str]] = {}
        i = 0
        while i < len(words):
            word, _, inline = words[i].partition("=")
            if word in counts:
                vals = ([inline] if inline else []) + words[i + 1 : i + 1 + counts[word] - bool(inline)]
                got[word] = vals
                i += 1 + counts[word] - bool(inline)
            else:
                i += 1
        return cls.from_options(got.get("--crop-box"), got.get("--crop-rotation"), got.get("--crop-sphere"))


@dataclass(frozen=True)
class CleanOptions:
    """The filters ``splatfield export`` applies after the size ratio and before the SH degree,
    in this order (each counts what it removes of what the previous ones left):

    1. ``region``: the Gaussians whose mean is outside the crop box, then outside the sphere;
    2. ``min_opacity``: opacity below it;
    3. ``max_scale``: largest axis scale (world units) above it;
    4. ``min_contribution``: floaters, Gaussians that give no training view at least this much
       (the sum over a view's pixels of alpha times the transmittance in front of it, so in
       pixels: 1 is one pixel's worth of colour); needs the run's training cameras, and is
       measured on what the filters before it kept.

    The ranges are checked here (a :class:`~.config.ConfigError` naming the option). The
    filters themselves are :func:`splatfield.scenes.cleaning.clean`."""

    region: CropRegion = CropRegion()
    min_opacity: float = 0.0
    max_scale: float | None = None
    min_contribution: float | None = None

    def __post_init__(self) -> None:
        require(math.isfinite(self.min_opacity) and 0.0 <= self.min_opacity < 1.0, "min_opacity",
                f"must be in [0, 1) (got {self.min_opacity})")  # fmt: skip
        if self.max_scale is not None:
            finite_at_least(self.max_scale, "max_scale", 0.0, strict=True)
        if self.min_contribution is not None:
            finite_at_least(self.min_contribution, "min_contribution", 0.0, strict=True)

    def __bool__(self) -> bool:
        """Whether any filter is on."""
        return (bool(self.region) or self.min_opacity > 0 or self.max_scale is not None
                or self.min_contribution is not None)

    @property
    def needs_cameras(self) -> bool:
        """Whether the filters need a run's training cameras (``--min-contribution``)."""
        return self.min_contribution is not None

    def options(self) -> list[str]:
        """The export options that give these filters, exactly."""
        args = self.region.options()
        if self.min_opacity > 0:
            args += ["--min-opacity", number_text(self.min_opacity)]
        if self.max_scale is not None:
            args += ["--max-scale", number_text(self.max_scale)]
        if self.min_contribution is not None:
            args += ["--min-contribution", number_text(self.min_contribution)]
        return args
