"""The Niantic ``.spz`` layout: write version 3 (or 2), read versions 2 and 3.

A gzip stream over a 16-byte little-endian header::

    uint32 magic 0x5053474E ("NGSP")   uint32 version   uint32 count
    uint8 SH degree   uint8 fractional bits (12)   uint8 flags (1 = antialiased)   uint8 0

followed by one stream per attribute, each for all splats in turn:

- positions: 3 x 24-bit signed little-endian fixed point, round(v * 2^fractional_bits);
- alphas: uint8 round(sigmoid(opacity) * 255);
- colours: uint8 round(f_dc * 0.15 * 255 + 127.5) (0.15 instead of C0, so colours a bit
  outside [0, 1] survive);
- scales: uint8 round((log_scale + 10) * 16);
- rotations, version 3: one little-endian uint32 per splat, "smallest three" of the unit
  quaternion taken in x, y, z, w order: bits 30..31 the index of the largest |component|
  (q negated so it is positive), then the other three in x y z w order at bits 20..29,
  10..19, 0..9, each as a sign bit (bit 9) and a 9-bit magnitude floor(511 |c| / sqrt(1/2) + 0.5);
- rotations, version 2: 3 x uint8 of x, y, z of the unit quaternion with w >= 0, as
  round(c * 127.5 + 127.5); w is reconstructed as sqrt(1 - x^2 - y^2 - z^2). (This is
  the layout of Niantic's reference implementation, packQuaternionFirstThree.)
- SH: per splat, coefficient-major with the three channels inner (shN [N, K-1, 3] as is),
  uint8 round(x * 128) + 128 rounded to a multiple of 8 (5 bits, degree-1 coefficients)
  or 16 (4 bits, degree 2 and 3), clamped to 0..255; decoded as (u8 - 128) / 128.

SPZ's axes are right-up-back; splatfield's (and ply's/COLMAP's) are right-down-forward.
Writing negates y and z of positions and of the quaternion's (x, y, z) part, and negates
the SH coefficients that change sign under (x, y, z) -> (x, -y, -z), i.e. those of odd
total degree in y and z: degree 1: y, z; degree 2: xy, xz; degree 3: y(3x²-y²),
y(4z²-x²-y²), z(2z²-3x²-3y²), z(x²-y²) (xyz is even in the pair and keeps its sign).
Reading undoes the same flips.

Rounding is half away from zero, as in the reference (C++ std::round). If positions do
not fit 24 bits with 12 fractional bits (|v| >= 2048), fewer fractional bits are written
(the header carries them). Version 4 files (zstd, a different container) and SH degree 4
are refused with a :class:`SpzError`; so is everything else wrong with a file (one line,
naming the file).

What it keeps: positions to 2^-12 (about 0.24 mm), log-scales to 1/16 in [-10, 5.94],
opacity to 1/255, f_dc to 1/38 in [-3.33, 3.33], rotations to ~0.0007 per component,
SH to 1/16 (degree 1) or 1/8 in [-1, 0.99]. What it loses: values outside those ranges
(clamped), the antialiasing flag on reading (Gaussians do not carry it).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from splatfield.render import Gaussians
from splatfield.scenes.checkpoint import atomic_write
from splatfield.scenes.formats.common import (
    FormatError,
    check_finite,
    from_arrays,
    logit,
    normalise_quats,
    pack_smallest_three,
    sigmoid,
    sh_degree_of,
    to_arrays,
    truncate_sh,
    unpack_smallest_three,
)

__all__ = [
    "SpzError",
    "SPZ_MAGIC",
    "SPZ_HEADER",
    "SPZ_COLOR_SCALE",
    "SH_FLIP_RDF_RUB",
    "read_spz",
    "write_spz",
    "encode_spz",
    "decode_spz",
]

SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
SPZ_HEADER = struct.Struct("<IIIBBBB")
SPZ_COLOR_SCALE = 0.15
FLAG_ANTIALIASED = 0x1
FLAG_HAS_EXTENSIONS = 0x2
_SQRT1_2 = math.sqrt(0.5)
_MAX_FIXED = (1 << 23) - 1
_V4_PROBLEM = "spz version {version} (zstd-compressed streams) is unsupported; only versions 2 and 3 can be read"

#: Sign of each of the 15 higher-order SH coefficients under (x, y, z) -> (x, -y, -z).
SH_FLIP_RDF_RUB = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float64)


# Precision of the SH coefficients inside their 8-bit bytes (any reader decodes any of them).
# Niantic's library quantises degree 1 to 5 bits and higher degrees to 4, so that gzip packs
# them tighter; on the lego run those 4 bits alone cost 0.55 dB of test PSNR (with every other
# field exact the drop is 0.015 dB). 5 bits throughout: 10.0x smaller than ply for a 0.25 dB
# drop, against 11.4x for 0.55 dB (docs/BENCHMARKS.md).
SH1_BITS = 5
SH_REST_BITS = 5


class SpzError(FormatError):
    """A ``.spz`` file that cannot be read or written."""


def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C++ std::round)."""
    return np.trunc(x + np.copysign(0.5, x))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round(x), 0, 255).astype(np.uint8)


def _bytes_per_splat(version: int, sh_dim: int) -> int:
    return 9 + 1 + 3 + 3 + (4 if version >= 3 else 3) + 3 * sh_dim


# ---------------------------------------------------------------------------------- writing


def encode_spz(
    gaussians: Gaussians,
    *,
    version: Literal[2, 3] = 3,
    sh_degree: int | None = None,
    antialiased: bool = False,
    sh1_bits: int = SH1_BITS,
    sh_rest_bits: int = SH_REST_BITS,
    path: str | os.PathLike[str] = "<memory>",
) -> bytes:
    """The uncompressed spz payload (header + streams) for ``gaussians``."""
    if version not in (2, 3):
        raise SpzError(path, f"can write spz version 2 or 3, not {version}")
    check_finite(gaussians, path, SpzError)
    a = to_arrays(gaussians)
    shN = truncate_sh(a["shN"], sh_degree, path, SpzError)
    N, K1 = a["means"].shape[0], shN.shape[1]
    flip = np.array([1.0, -1.0, -1.0])

    pos = a["means"].astype(np.float64) * flip
    frac = 12
    biggest = float(np.abs(pos).max()) if N else 0.0
    while frac > 0 and biggest * (1 << frac) > _MAX_FIXED:
        frac -= 1
    if biggest * (1 << frac) > _MAX_FIXED:
        raise SpzError(path, f"a position coordinate of magnitude {biggest:g} does not fit 24-bit fixed point")
    fixed = _round(pos * (1 << frac)).astype("<i4").reshape(-1)
    positions = fixed.view(np.uint8).reshape(-1, 4)[:, :3]  # little-endian low 3 bytes

    alphas = _u8(sigmoid(a["opacity_logits"]) * 255.0)
    colors = _u8(a["sh0"].reshape(N, 3).astype(np.float64) * (SPZ_COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((a["log_scales"].astype(np.float64) + 10.0) * 16.0)

    q = normalise_quats(a["quats"])  # w x y z, unit, w >= 0
    xyzw = np.stack([q[:, 1], -q[:, 2], -q[:, 3], q[:, 0]], axis=1)  # RDF -> RUB, x y z w
    if version >= 3:
        index, rest = pack_smallest_three(xyzw)
        mag = np.minimum(np.floor(511.0 * np.abs(rest) / _SQRT1_2 + 0.5), 511).astype(np.uint32)
        ten = (rest < 0).astype(np.uint32) << np.uint32(9) | mag
        comp = (index.astype(np.uint32) << np.uint32(30)) | (ten[:, 0] << np.uint32(20)) | (ten[:, 1] << np.uint32(10))
        rotations = (comp | ten[:, 2]).astype("<u4")
    else:
        xyzw = xyzw * np.where(xyzw[:, 3] < 0, -1.0, 1.0)[:, None]
        rotations = _u8(xyzw[:, :3] * 127.5 + 127.5)

    # float32 is exact here: x * 128 scales by a power of two, the sums stay far below 2^24
    sh = shN * (SH_FLIP_RDF_RUB[:K1, None] * 128.0).astype(np.float32)
    q_sh = _round(sh) + np.float32(128.0)
    for bits in (sh1_bits, sh_rest_bits):
        if not 1 <= bits <= 8:
            raise SpzError(path, f"SH bits must be in 1..8, got {bits}")
    # quantise degree-1 coefficients to sh1_bits, higher degrees to sh_rest_bits (of the 8 stored)
    bucket = np.where(np.arange(K1) < 3, 2.0 ** (8 - sh1_bits), 2.0 ** (8 - sh_rest_bits)).astype(np.float32)[:, None]
    q_sh = np.floor((q_sh + bucket / 2) / bucket) * bucket
    sh_bytes = np.clip(q_sh, 0, 255).astype(np.uint8)

    header = SPZ_HEADER.pack(SPZ_MAGIC, version, N, sh_degree_of(K1), frac, FLAG_ANTIALIASED if antialiased else 0, 0)
    streams = (positions, alphas, colors, scales, rotations, sh_bytes)
    return header + b"".join(s.tobytes() for s in streams)


def write_spz(
    path: str | os.PathLike[str],
    gaussians: Gaussians,
    *,
    version: Literal[2, 3] = 3,
    sh_degree: int | None = None,
    antialiased: bool = False,
    compresslevel: int = 6,
    sh1_bits: int = SH1_BITS,
    sh_rest_bits: int = SH_REST_BITS,
) -> None:
    """Writes ``gaussians`` as a gzipped ``.spz`` (version 3 by default), atomically.

    ``sh_degree`` (0..3, at most the scene's) writes only that many SH bands; None keeps all.
    The gzip header carries no time stamp, so equal scenes give equal files.
    """
    path = Path(path)
    payload = encode_spz(gaussians, version=version, sh_degree=sh_degree, antialiased=antialiased, sh1_bits=sh1_bits,
                         sh_rest_bits=sh_rest_bits, path=path)  # fmt: skip
    data = gzip.compress(payload, compresslevel=compresslevel, mtime=0)
    atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------- reading


def decode_spz(payload: bytes, path: str | os.PathLike[str] = "<memory>") -> Gaussians:
    """:class:`Gaussians` from an uncompressed spz payload (header + streams)."""
    if len(payload) < SPZ_HEADER.size:
        raise SpzError(path, f"truncated: {len(payload)} bytes, an spz header needs {SPZ_HEADER.size}")
    magic, version, N, degree, frac, flags, _reserved = SPZ_HEADER.unpack_from(payload)
    if magic != SPZ_MAGIC:
        raise SpzError(path, f"wrong magic 0x{magic:08X} (expected 0x{SPZ_MAGIC:08X} 'NGSP'): not an spz file")
    if version >= 4:
        raise SpzError(path, _V4_PROBLEM.format(version=version))
    if version not in (2, 3):
        raise SpzError(path, f"spz version {version} is unsupported; only versions 2 and 3 can be read")
    if degree > 3:
        raise SpzError(path, f"SH degree {degree} is unsupported (0..3)")
    if frac > 23:
        raise SpzError(path, f"{frac} fractional bits is out of range for 24-bit positions")
    K1 = (degree + 1) ** 2 - 1
    need = SPZ_HEADER.size + N * _bytes_per_splat(version, K1)
    if len(payload) < need:
        raise SpzError(
            path, f"truncated: {N} splats of version {version} need {need} bytes, the stream has {len(payload)}"
        )
    if len(payload) > need and not flags & FLAG_HAS_EXTENSIONS:
        raise SpzError(
            path, f"{len(payload) - need} bytes after the streams of {N} splats (wrong count in the header?)"
        )

    buf = np.frombuffer(payload, dtype=np.uint8, count=need - SPZ_HEADER.size, offset=SPZ_HEADER.size)
    at = 0

    def take(n: int) -> np.ndarray:
        nonlocal at
        out = buf[at : at + n]
        at += n
        return out

    p = take(9 * N).reshape(N * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.reshape(N, 3).astype(np.float64) / (1 << frac) * np.array([1.0, -1.0, -1.0])
    alphas = take(N).astype(np.float64)
    colors = take(3 * N).reshape(N, 3).astype(np.float64)
    scales = take(3 * N).reshape(N, 3).astype(np.float64)
    if version >= 3:
        comp = take(4 * N).copy().view("<u4").astype(np.uint32)
        ten = np.stack([(comp >> np.uint32(s)) & np.uint32(0x3FF) for s in (20, 10, 0)], axis=1)
        rest = (ten & np.uint32(0x1FF)).astype(np.float64) * (_SQRT1_2 / 511.0)
        rest = np.where(ten & np.uint32(0x200), -rest, rest)
        xyzw = unpack_smallest_three(comp >> np.uint32(30), rest)
    else:
        xyz = take(3 * N).reshape(N, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", xyz, xyz)))
        xyzw = np.concatenate([xyz, w[:, None]], axis=1)
    quats = np.stack([xyzw[:, 3], xyzw[:, 0], -xyzw[:, 1], -xyzw[:, 2]], axis=1)  # RUB -> RDF, w x y z
    sh = take(3 * K1 * N).reshape(N, K1, 3).astype(np.float64)
    shN = (sh - 128.0) / 128.0 * SH_FLIP_RDF_RUB[:K1, None]

    return from_arrays(
        means=means,
        log_scales=scales / 16.0 - 10.0,
        quats=quats,
        opacity_logits=logit(alphas / 255.0),
        sh0=(colors / 255.0 - 0.5) / SPZ_COLOR_SCALE,
        shN=shN,
    )


def read_spz(path: str | os.PathLike[str]) -> Gaussians:
    """Reads a ``.spz`` file (versions 2 and 3) into float32 CPU :class:`Gaussians`.

    Raises :class:`SpzError`, also for version 4 (zstd) files.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise SpzError(path, f"corrupt or truncated gzip stream ({e})") from None
    elif len(raw) >= 8 and struct.unpack_from("<I", raw)[0] == SPZ_MAGIC:
        version = struct.unpack_from("<I", raw, 4)[0]
        if version >= 4:
            raise SpzError(path, _V4_PROBLEM.format(version=version))
        raise SpzError(path, f"spz version {version} stream is not gzip-compressed (expected a gzip file)")
    else:
        raise SpzError(path, "not an spz file (no gzip header)")
    gaussians = decode_spz(payload, path)
    check_finite(gaussians, path, SpzError)
    return gaussians
