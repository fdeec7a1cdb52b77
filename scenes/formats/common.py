"""Pieces shared by the compressed splat formats (FORMATS.md): errors, Morton order,
quaternion helpers ("smallest three" packing, canonical sign), clamped sigmoid/logit, and
the finiteness check every writer and reader runs.

Everything here works on whole arrays at once (numpy); nothing loops over splats.

Conventions (ARCHITECTURE.md): quaternions are ``w x y z``; opacities are logits; scales
are logs; RGB = 0.5 + C0 * sh0.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from splatfield.render import Gaussians

__all__ = [
    "SH_C0",
    "FormatError",
    "GaussianArrays",
    "check_finite",
    "from_arrays",
    "to_arrays",
    "morton_codes",
    "morton_order",
    "normalise_quats",
    "pack_smallest_three",
    "unpack_smallest_three",
    "sigmoid",
    "logit",
    "LOGIT_EPS",
    "sh_degree_of",
    "truncate_sh",
]

SH_C0 = 0.28209479177387814

#: logit(p) clamps p to [LOGIT_EPS, 1 - LOGIT_EPS], so a stored opacity of exactly 0 or 1
#: decodes to a finite logit (about ±16.1) whose sigmoid re-encodes to the same byte.
LOGIT_EPS = 1e-7

_FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")


class FormatError(ValueError):
    """A splat file that cannot be read or written: ``path`` and a one-line ``problem``.

    Each format has its own subclass (``SplatError``, ``CompressedPlyError``, ``SpzError``,
    ``SogError``); catch :class:`FormatError` for any of them. (The INRIA ply reader keeps its
    own ``PlyError``, which is a ``ValueError`` too.)
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")


# ------------------------------------------------------------------------- Gaussians <-> numpy

GaussianArrays = dict[str, np.ndarray]


def to_arrays(gaussians: Gaussians) -> GaussianArrays:
    """The raw fields as float32 numpy arrays on the CPU (views where possible)."""
    return {
        name: np.ascontiguousarray(getattr(gaussians, name).detach().to(device="cpu", dtype=torch.float32).numpy())
        for name in _FIELDS
    }


def from_arrays(
    means: np.ndarray,  # [N, 3]
    log_scales: np.ndarray,  # [N, 3]
    quats: np.ndarray,  # [N, 4] w x y z
    opacity_logits: np.ndarray,  # [N]
    sh0: np.ndarray,  # [N, 1, 3] or [N, 3]
    shN: np.ndarray,  # [N, K-1, 3]
) -> Gaussians:
    """float32 CPU :class:`Gaussians` from numpy arrays (copied, contiguous)."""
    N = means.shape[0]

    def t(a: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        arr = np.ascontiguousarray(a, dtype=np.float32).reshape(shape)
        if not arr.flags.writeable or arr.base is not None and not isinstance(arr.base, np.ndarray):
            arr = arr.copy()  # never hand torch a read-only view of a file buffer
        return torch.from_numpy(arr)

    return Gaussians(
        means=t(means, (N, 3)),
        log_scales=t(log_scales, (N, 3)),
        quats=t(quats, (N, 4)),
        opacity_logits=t(opacity_logits, (N,)),
        sh0=t(sh0, (N, 1, 3)),
        shN=t(shN, (N, shN.shape[1] if shN.ndim == 3 else 0, 3)),
    )


def check_finite(gaussians: Gaussians, path: str | os.PathLike[str], error: type[FormatError] = FormatError) -> None:
    """Raises ``error`` (one line, naming the file and the field) if any field holds NaN or ±Inf."""
    for name in _FIELDS:
        t = getattr(gaussians, name).detach()
        # One pass without a mask: a float64 sum of finite float32 values cannot overflow, so
        # it is finite exactly when every value is (float64 fields fall back to the mask).
        if t.numel() == 0 or bool(torch.isfinite(t.sum(dtype=torch.float64))):
            continue
        bad = ~torch.isfinite(t)
        if not bool(bad.any()):
            continue
        rows = bad.reshape(t.shape[0], -1).any(dim=1)
        first = int(torch.nonzero(rows)[0, 0])
        n_bad = int(rows.sum())
        kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
        raise error(path, f"Gaussians.{name} has {kind} values ({n_bad} splats, first at index {first})")


def sh_degree_of(n_rest: int) -> int:
    """SH degree from the number of higher-order coefficients per channel (0, 3, 8, 15)."""
    return {0: 0, 3: 1, 8: 2, 15: 3}[n_rest]


def truncate_sh(
    shN: np.ndarray, sh_degree: int | None, path: str | os.PathLike[str], error: type[FormatError]
) -> np.ndarray:
    """``shN`` [N, K-1, 3] cut to ``sh_degree`` bands (None keeps all); more than the scene has is an error."""
    have = sh_degree_of(shN.shape[1])
    if sh_degree is None:
        return shN
    if sh_degree not in (0, 1, 2, 3):
        raise error(path, f"sh_degree must be 0..3, got {sh_degree}")
    if sh_degree > have:
        raise error(path, f"sh_degree={sh_degree} asked for, but the scene only has SH degree {have}")
    return shN[:, : (sh_degree + 1) ** 2 - 1]


# ------------------------------------------------------------------------------- activations


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float64, without overflow warnings for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logit(p: np.ndarray, eps: float = LOGIT_EPS) -> np.ndarray:
    """Inverse sigmoid in float64, with p clamped to [eps, 1 - eps] so logit(0), logit(1) are finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


# ------------------------------------------------------------------------------- quaternions


def normalise_quats(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions (w x y z) in float64 with the canonical sign w >= 0.

    A zero quaternion becomes the identity (1, 0, 0, 0). When w == 0 exactly, the first
    non-zero of x, y, z is made positive, so q and -q always map to the same result.
    """
    q = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    zero = norm == 0
    q = q / np.where(zero, 1.0, norm)[:, None]
    q[zero] = (1.0, 0.0, 0.0, 0.0)
    # sign: the first non-zero component positive (for almost all quats: w)
    nz = q != 0
    first = np.argmax(nz, axis=1)
    sign = np.sign(q[np.arange(q.shape[0]), first])
    return q * sign[:, None]


def pack_smallest_three(quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The "smallest three" split of unit quaternions given in any component order.

    ``quats`` [N, 4] is normalised here. Returns (index [N] uint8 of the largest-magnitude
    component (the first one on ties), rest [N, 3] float64: the other three components in
    their original order, after negating q so that the largest component is positive).
    Each of the three lies in [-1/sqrt(2), 1/sqrt(2)]. The caller quantises them.
    """
    q = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    zero = norm == 0
    q = q / np.where(zero, 1.0, norm)[:, None]
    q[zero] = (1.0, 0.0, 0.0, 0.0)  # only sensible in w-first order; callers normalise first
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(q.shape[0])
    q = q * np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    keep = ~(np.arange(4)[None, :] == largest[:, None])  # [N, 4], three True per row
    rest = q[keep].reshape(-1, 3)
    return largest.astype(np.uint8), rest


def unpack_smallest_three(index: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_smallest_three`: [N, 4] float64 in the same component order.

    The missing component is sqrt(max(0, 1 - |rest|^2)) (non-negative).
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    rest = np.asarray(rest, dtype=np.float64).reshape(-1, 3)
    N = rest.shape[0]
    largest = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", rest, rest)))
    q = np.empty((N, 4), dtype=np.float64)
    keep = ~(np.arange(4)[None, :] == index[:, None])
    q[keep] = rest.reshape(-1)
    q[np.arange(N), index] = largest
    return q


# ---------------------------------------------------------------------------------- Morton


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Inserts two zero bits between each of the low 21 bits of ``v`` (uint64)."""
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)
    return v


def morton_codes(means: np.ndarray | torch.Tensor, bits: Literal[10, 21] = 21) -> np.ndarray:
    """Morton (z-order) codes [N] uint64 of positions quantised to their bounding box.

    Each axis is mapped to ``bits`` bits: floor(2^bits * (v - min) / (max - min)), clamped
    to 2^bits - 1 (an axis of zero extent maps to 0). x takes the lowest bit of each triple.
    Non-finite positions are an error of the caller (check them first).
    """
    if bits not in (10, 21):
        raise ValueError(f"morton bits must be 10 or 21, got {bits}")
    if isinstance(means, torch.Tensor):
        means = means.detach().to("cpu").numpy()
    m = np.asarray(means, dtype=np.float64).reshape(-1, 3)
    if m.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    lo = m.min(axis=0)
    extent = m.max(axis=0) - lo
    cells = float(1 << bits)
    scale = np.where(extent > 0, cells / np.where(extent > 0, extent, 1.0), 0.0)
    q = np.clip(np.floor((m - lo) * scale), 0, cells - 1).astype(np.uint64)
    return _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << np.uint64(1)) | (_spread_bits(q[:, 2]) << np.uint64(2))


def morton_order(means: np.ndarray | torch.Tensor, bits: Literal[10, 21] = 21) -> np.ndarray:
    """The permutation [N] int64 that sorts splats by Morton code (stable: ties keep their order)."""
    return np.argsort(morton_codes(means, bits), kind="stable")
