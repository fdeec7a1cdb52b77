"""The antimatter15 ``.splat`` layout: read and write :class:`~splatfield.render.Gaussians`.

No header; 32 bytes per splat, little-endian::

    0  float32 x 3   position
    12 float32 x 3   linear scale exp(log_scale)
    24 uint8 x 4     R G B A: RGB = round((0.5 + C0 * f_dc) * 255), A = round(sigmoid(opacity) * 255),
                     both clipped to 0..255
    28 uint8 x 4     quaternion w x y z, normalised (w >= 0), as round(q * 128 + 128) clipped to 0..255

Splats are written sorted by descending exp(sum(log_scale)) * sigmoid(opacity) (compared
in the log domain, so huge scales do not overflow; ties keep the scene's order).

What it keeps: float32 positions, scales up to float32 rounding of exp/log (scales whose
exp under- or overflows float32 cannot be stored and are an error), 8-bit colour and
opacity, 8-bit quaternions. What it loses: all view-dependent colour (``shN``; read back
as SH degree 0), colours outside [0, 1], the order of the splats.

Reading decodes ``sh0 = (c / 255 - 0.5) / C0``, ``opacity = logit(a / 255)`` (clamped so
0 and 255 stay finite), ``quat = (b - 128) / 128`` (not renormalised). Everything wrong
with a file is a :class:`SplatError`: one line naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from splatfield.render import Gaussians
from splatfield.scenes.checkpoint import atomic_write
from splatfield.scenes.formats.common import (
    SH_C0,
    FormatError,
    check_finite,
    from_arrays,
    logit,
    normalise_quats,
    sigmoid,
    to_arrays,
)

__all__ = ["SplatError", "SPLAT_DTYPE", "read_splat", "write_splat", "encode_splat", "decode_splat"]

#: One record of a .splat file.
SPLAT_DTYPE = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rot", "u1", (4,))])
assert SPLAT_DTYPE.itemsize == 32


class SplatError(FormatError):
    """A ``.splat`` file that cannot be read or written."""


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def encode_splat(gaussians: Gaussians, path: str | os.PathLike[str] = "<memory>") -> np.ndarray:
    """The sorted records [N] of ``SPLAT_DTYPE`` (raises :class:`SplatError` on NaN/Inf fields)."""
    check_finite(gaussians, path, SplatError)
    a = to_arrays(gaussians)
    N = a["means"].shape[0]
    log_s = a["log_scales"].astype(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        scales = np.exp(log_s).astype(np.float32)
    bad = ~np.isfinite(scales) | ((scales == 0) & np.isfinite(log_s))
    if bad.any():
        i = int(np.nonzero(bad.any(axis=1))[0][0])
        raise SplatError(path, f"log_scales[{i}] = {log_s[i].tolist()} cannot be stored as a float32 linear scale")
    opacity = a["opacity_logits"].astype(np.float64)
    # log(exp(sum s) * sigmoid(o)) = sum s - softplus(-o); sort descending, stable
    key = log_s.sum(axis=1) - np.logaddexp(0.0, -opacity)
    order = np.argsort(-key, kind="stable")

    rec = np.empty(N, dtype=SPLAT_DTYPE)
    rec["position"] = a["means"][order]
    rec["scale"] = scales[order]
    rgb = 0.5 + SH_C0 * a["sh0"].reshape(N, 3).astype(np.float64)
    rec["rgba"][:, :3] = _u8(rgb[order] * 255.0)
    rec["rgba"][:, 3] = _u8(sigmoid(opacity[order]) * 255.0)
    rec["rot"] = _u8(normalise_quats(a["quats"][order]) * 128.0 + 128.0)
    return rec


def decode_splat(records: np.ndarray) -> Gaussians:
    """:class:`Gaussians` (SH degree 0) from records of ``SPLAT_DTYPE``."""
    N = records.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scales = np.log(records["scale"].astype(np.float64))
    rgba = records["rgba"].astype(np.float64)
    return from_arrays(
        means=records["position"],
        log_scales=log_scales,
        quats=(records["rot"].astype(np.float64) - 128.0) / 128.0,
        opacity_logits=logit(rgba[:, 3] / 255.0),
        sh0=(rgba[:, :3] / 255.0 - 0.5) / SH_C0,
        shN=np.zeros((N, 0, 3), dtype=np.float32),
    )


def write_splat(path: str | os.PathLike[str], gaussians: Gaussians) -> None:
    """Writes ``gaussians`` as a ``.splat`` file, atomically (temp file + rename)."""
    path = Path(path)
    records = encode_splat(gaussians, path)
    atomic_write(path, lambda f: f.write(records.tobytes()))


def read_splat(path: str | os.PathLike[str]) -> Gaussians:
    """Reads a ``.splat`` file into float32 CPU :class:`Gaussians` (raises :class:`SplatError`)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise SplatError(
            path,
            f"size {len(data)} bytes is not a multiple of {SPLAT_DTYPE.itemsize} (truncated or not a .splat file)",
        )
    records = np.frombuffer(data, dtype=SPLAT_DTYPE)
    for field in ("position", "scale"):
        bad = ~np.isfinite(records[field]).all(axis=1)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise SplatError(path, f"splat {i} has a non-finite {field} ({int(bad.sum())} splats affected)")
    bad = (records["scale"] <= 0).any(axis=1)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise SplatError(path, f"splat {i} has a scale <= 0 ({int(bad.sum())} splats affected)")
    gaussians = decode_splat(records)
    check_finite(gaussians, path, SplatError)
    return gaussians
