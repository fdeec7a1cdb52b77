"""The Niantic ``.spz`` layout: write version 3 (default), 4 or 2; read versions 2, 3 and 4.

Versions 2 and 3: a gzip stream over a 16-byte little-endian header::

    uint32 magic 0x5053474E ("NGSP")   uint32 version   uint32 count
    uint8 SH degree   uint8 fractional bits (12)   uint8 flags (1 = antialiased)   uint8 0

followed by one stream per attribute, each for all splats in turn (then, with flag 2,
extension records). Version 4 (Niantic's spz 3.0 library, PlayCanvas splat-transform's
default since 3.7) keeps the streams but not the container: an uncompressed 32-byte header::

    uint32 magic   uint32 version (4)   uint32 count   uint8 SH degree   uint8 fractional bits
    uint8 flags   uint8 stream count   uint32 byte offset of the table of contents   12 bytes 0

then extension records (flag 2) up to that offset, the table (per stream: uint64 compressed
size, uint64 uncompressed size) and the streams, each its own zstd frame, in the order
below; an empty stream (SH of degree 0) is left out. Extension records are ``uint32 type,
uint32 length, payload``; the one that matters to reading is Adobe's coordinate system
(type 0xADBE0003, a uint32: 4 = right-up-back, the default; 6 = right-down-forward, stored
as is). The streams:

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

Axes. Niantic's README names right-up-back as SPZ's axes; splatfield's (and ply's/COLMAP's)
are right-down-forward. But the tools people convert with store a ply's axes as they are:
PlayCanvas splat-transform (the library of SuperSplat), spz-js and Niantic's own
ply_to_spz (docs/FORMATS.md has the measurements). ``axes="ply"`` (the default) does the
same; ``axes="rub"`` negates y and z of positions and of the quaternion's (x, y, z) part, and
the SH coefficients that change sign under (x, y, z) -> (x, -y, -z), i.e. those of odd
total degree in y and z: degree 1: y, z; degree 2: xy, xz; degree 3: y(3x²-y²),
y(4z²-x²-y²), z(2z²-3x²-3y²), z(x²-y²) (xyz is even in the pair and keeps its sign).
Version 4 files say their axes in the coordinate-system extension, and reading follows it;
a file that does not say is read with the ``axes`` given (default "ply").

Rounding is half away from zero, as in the reference (C++ std::round). If positions do
not fit 24 bits with 12 fractional bits (|v| >= 2048), fewer fractional bits are written
(the header carries them). SH degree 4 is refused with a :class:`SpzError`; so is everything
else wrong with a file (one line, naming the file).

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
    "SpzAxes",
    "read_spz",
    "write_spz",
    "encode_spz",
    "encode_spz4",
    "decode_spz",
    "decode_spz4",
]

SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
SPZ_HEADER = struct.Struct("<IIIBBBB")
SPZ4_HEADER = struct.Struct("<IIIBBBBI12x")  # version 4: uncompressed, 32 bytes
_TOC_ENTRY = struct.Struct("<QQ")
_EXTENSION = struct.Struct("<II")
EXT_COORDINATE_SYSTEM = 0xADBE0003
_AXES_RUB, _AXES_RDF = 4, 6  # Adobe's coordinate-system values (0: unspecified)
#: How a file's axes relate to splatfield's (= ply's, right-down-forward): "ply" stores them
#: as they are (what PlayCanvas splat-transform, SuperSplat, spz-js and Niantic's own
#: ply_to_spz do), "rub" converts to right-up-back (the axes Niantic's README names).
SpzAxes = Literal["ply", "rub"]
_AXES_CODE = {"ply": _AXES_RDF, "rub": _AXES_RUB}
ZSTD_LEVEL = 12  # Niantic's library's level
SPZ_COLOR_SCALE = 0.15
FLAG_ANTIALIASED = 0x1
FLAG_HAS_EXTENSIONS = 0x2
_SQRT1_2 = math.sqrt(0.5)
_MAX_FIXED = (1 << 23) - 1

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


def _flips(axes: int, K1: int) -> tuple[np.ndarray, np.ndarray]:
    """Signs of (x, y, z) and of the K1 higher SH coefficients between our axes and ``axes``."""
    if axes == _AXES_RUB:
        return np.array([1.0, -1.0, -1.0]), SH_FLIP_RDF_RUB[:K1]
    return np.ones(3), np.ones(K1)


def _encode_streams(
    gaussians: Gaussians, version: int, sh_degree: int | None, sh1_bits: int, sh_rest_bits: int, axes: SpzAxes, path
) -> tuple[int, int, int, tuple[np.ndarray, ...]]:
    """(count, SH degree, fractional bits, the six attribute streams) of ``gaussians``."""
    if axes not in _AXES_CODE:
        raise SpzError(path, f"axes must be one of {', '.join(_AXES_CODE)}, not {axes!r}")
    check_finite(gaussians, path, SpzError)
    a = to_arrays(gaussians)
    shN = truncate_sh(a["shN"], sh_degree, path, SpzError)
    N, K1 = a["means"].shape[0], shN.shape[1]
    flip, sh_flip = _flips(_AXES_CODE[axes], K1)

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
    xyzw = np.stack([q[:, 1] * flip[0], q[:, 2] * flip[1], q[:, 3] * flip[2], q[:, 0]], axis=1)  # x y z w
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
    sh = shN * (sh_flip[:, None] * 128.0).astype(np.float32)
    q_sh = _round(sh) + np.float32(128.0)
    for bits in (sh1_bits, sh_rest_bits):
        if not 1 <= bits <= 8:
            raise SpzError(path, f"SH bits must be in 1..8, got {bits}")
    # quantise degree-1 coefficients to sh1_bits, higher degrees to sh_rest_bits (of the 8 stored)
    bucket = np.where(np.arange(K1) < 3, 2.0 ** (8 - sh1_bits), 2.0 ** (8 - sh_rest_bits)).astype(np.float32)[:, None]
    q_sh = np.floor((q_sh + bucket / 2) / bucket) * bucket
    sh_bytes = np.clip(q_sh, 0, 255).astype(np.uint8)
    return N, sh_degree_of(K1), frac, (positions, alphas, colors, scales, rotations, sh_bytes)


def encode_spz(
    gaussians: Gaussians,
    *,
    version: Literal[2, 3] = 3,
    sh_degree: int | None = None,
    antialiased: bool = False,
    sh1_bits: int = SH1_BITS,
    sh_rest_bits: int = SH_REST_BITS,
    axes: SpzAxes = "ply",
    path: str | os.PathLike[str] = "<memory>",
) -> bytes:
    """The uncompressed payload (header + streams) of a version 2 or 3 file for ``gaussians``
    (no extension records: the axes are not said in the file)."""
    if version not in (2, 3):
        raise SpzError(path, f"a gzip payload is version 2 or 3, not {version}")
    N, degree, frac, streams = _encode_streams(gaussians, version, sh_degree, sh1_bits, sh_rest_bits, axes, path)
    header = SPZ_HEADER.pack(SPZ_MAGIC, version, N, degree, frac, FLAG_ANTIALIASED if antialiased else 0, 0)
    return header + b"".join(s.tobytes() for s in streams)


def encode_spz4(
    gaussians: Gaussians,
    *,
    sh_degree: int | None = None,
    antialiased: bool = False,
    level: int = ZSTD_LEVEL,
    sh1_bits: int = SH1_BITS,
    sh_rest_bits: int = SH_REST_BITS,
    axes: SpzAxes = "ply",
    path: str | os.PathLike[str] = "<memory>",
) -> bytes:
    """A whole version 4 file for ``gaussians``: header, the axes as Adobe's coordinate-system
    extension (so that readers that know it need no option), table, one zstd frame per stream."""
    import zstandard  # only version 4 needs it (a GPU machine's image may lack it)

    N, degree, frac, streams = _encode_streams(gaussians, 4, sh_degree, sh1_bits, sh_rest_bits, axes, path)
    raw = [s.tobytes() for s in streams if s.size]
    packer = zstandard.ZstdCompressor(level=level)  # no checksum, content size in each frame
    frames = [packer.compress(r) for r in raw]
    flags = (FLAG_ANTIALIASED if antialiased else 0) | FLAG_HAS_EXTENSIONS
    extensions = _EXTENSION.pack(EXT_COORDINATE_SYSTEM, 4) + struct.pack("<I", _AXES_CODE[axes])
    toc_at = SPZ4_HEADER.size + len(extensions)
    header = SPZ4_HEADER.pack(SPZ_MAGIC, 4, N, degree, frac, flags, len(frames), toc_at)
    toc = b"".join(_TOC_ENTRY.pack(len(f), len(r)) for f, r in zip(frames, raw))
    return header + extensions + toc + b"".join(frames)


def write_spz(
    path: str | os.PathLike[str],
    gaussians: Gaussians,
    *,
    version: Literal[2, 3, 4] = 3,
    sh_degree: int | None = None,
    antialiased: bool = False,
    compresslevel: int | None = None,
    sh1_bits: int = SH1_BITS,
    sh_rest_bits: int = SH_REST_BITS,
    axes: SpzAxes = "ply",
) -> None:
    """Writes ``gaussians`` as a ``.spz`` (version 3, gzip, by default; 4: zstd), atomically.

    ``axes``: "ply" stores splatfield's axes as they are, "rub" right-up-back (see SpzAxes).

    ``sh_degree`` (0..3, at most the scene's) writes only that many SH bands; None keeps all.
    ``compresslevel``: gzip's (default 6) or zstd's (default 12). The gzip header carries no
    time stamp, so equal scenes give equal files.
    """
    path = Path(path)
    opts = dict(sh_degree=sh_degree, antialiased=antialiased, sh1_bits=sh1_bits, sh_rest_bits=sh_rest_bits, axes=axes,
                path=path)  # fmt: skip
    if version == 4:
        data = encode_spz4(gaussians, level=ZSTD_LEVEL if compresslevel is None else compresslevel, **opts)
    elif version in (2, 3):
        payload = encode_spz(gaussians, version=version, **opts)
        data = gzip.compress(payload, compresslevel=6 if compresslevel is None else compresslevel, mtime=0)
    else:
        raise SpzError(path, f"can write spz version 2, 3 or 4, not {version}")
    atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------- reading


def _check_header(version: int, degree: int, frac: int, path) -> int:
    """The number of higher-order SH coefficients; one-line errors for what cannot be read."""
    if version not in (2, 3, 4):
        raise SpzError(path, f"spz version {version} is unsupported; versions 2, 3 and 4 can be read")
    if degree > 3:
        raise SpzError(path, f"SH degree {degree} is unsupported (0..3)")
    if frac > 23:
        raise SpzError(path, f"{frac} fractional bits is out of range for 24-bit positions")
    return (degree + 1) ** 2 - 1


def _axes_of(extensions: bytes, default: int, path) -> int:
    """The stored axes named by the extension records (``default`` when none says)."""
    axes, at = default, 0
    while at + _EXTENSION.size <= len(extensions):
        kind, length = _EXTENSION.unpack_from(extensions, at)
        at += _EXTENSION.size
        if at + length > len(extensions):
            raise SpzError(path, f"extension 0x{kind:08X} of {length} bytes runs past the extension block")
        if kind == EXT_COORDINATE_SYSTEM and length >= 4:
            axes = struct.unpack_from("<I", extensions, at)[0] or default
            if axes not in (_AXES_RUB, _AXES_RDF):
                raise SpzError(path, f"stored in coordinate system {axes} (Adobe's numbering); only right-up-back (4) "
                               "and right-down-forward (6) can be read")  # fmt: skip
        at += length
    return axes


def _decode_streams(buf: np.ndarray, N: int, version: int, K1: int, frac: int, axes: int) -> Gaussians:
    """:class:`Gaussians` from the six attribute streams back to back in ``buf``."""
    at = 0

    def take(n: int) -> np.ndarray:
        nonlocal at
        out = buf[at : at + n]
        at += n
        return out

    flip, sh_flip = _flips(axes, K1)  # each is its own inverse
    p = take(9 * N).reshape(N * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.reshape(N, 3).astype(np.float64) / (1 << frac) * flip
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
    quats = np.stack([xyzw[:, 3], xyzw[:, 0] * flip[0], xyzw[:, 1] * flip[1], xyzw[:, 2] * flip[2]], axis=1)
    sh = take(3 * K1 * N).reshape(N, K1, 3).astype(np.float64)
    shN = (sh - 128.0) / 128.0 * sh_flip[:, None]

    return from_arrays(
        means=means,
        log_scales=scales / 16.0 - 10.0,
        quats=quats,
        opacity_logits=logit(alphas / 255.0),
        sh0=(colors / 255.0 - 0.5) / SPZ_COLOR_SCALE,
        shN=shN,
    )


def decode_spz(payload: bytes, path: str | os.PathLike[str] = "<memory>", axes: SpzAxes = "ply") -> Gaussians:
    """:class:`Gaussians` from the uncompressed payload of a version 2 or 3 file (``axes``: of
    a file whose extensions do not say)."""
    if len(payload) < SPZ_HEADER.size:
        raise SpzError(path, f"truncated: {len(payload)} bytes, an spz header needs {SPZ_HEADER.size}")
    magic, version, N, degree, frac, flags, _reserved = SPZ_HEADER.unpack_from(payload)
    if magic != SPZ_MAGIC:
        raise SpzError(path, f"wrong magic 0x{magic:08X} (expected 0x{SPZ_MAGIC:08X} 'NGSP'): not an spz file")
    if version == 4:
        raise SpzError(path, "a version 4 header inside a gzip stream (version 4 files are not gzipped)")
    K1 = _check_header(version, degree, frac, path)
    need = SPZ_HEADER.size + N * _bytes_per_splat(version, K1)
    if len(payload) < need:
        raise SpzError(
            path, f"truncated: {N} splats of version {version} need {need} bytes, the stream has {len(payload)}"
        )
    if len(payload) > need and not flags & FLAG_HAS_EXTENSIONS:
        raise SpzError(
            path, f"{len(payload) - need} bytes after the streams of {N} splats (wrong count in the header?)"
        )
    stored = _axes_of(payload[need:], _AXES_CODE[axes], path) if flags & FLAG_HAS_EXTENSIONS else _AXES_CODE[axes]
    buf = np.frombuffer(payload, dtype=np.uint8, count=need - SPZ_HEADER.size, offset=SPZ_HEADER.size)
    return _decode_streams(buf, N, version, K1, frac, stored)


def decode_spz4(raw: bytes, path: str | os.PathLike[str] = "<memory>", axes: SpzAxes = "ply") -> Gaussians:
    """:class:`Gaussians` from a whole version 4 file (``axes``: of a file whose extensions do
    not say)."""
    if len(raw) < SPZ4_HEADER.size:
        raise SpzError(path, f"truncated: {len(raw)} bytes, a version 4 header needs {SPZ4_HEADER.size}")
    import zstandard  # only version 4 needs it (a GPU machine's image may lack it)

    _magic, version, N, degree, frac, flags, count, toc_at = SPZ4_HEADER.unpack_from(raw)
    K1 = _check_header(version, degree, frac, path)
    if not SPZ4_HEADER.size <= toc_at <= len(raw) - count * _TOC_ENTRY.size:
        raise SpzError(path, f"table of contents at byte {toc_at} lies outside the {len(raw)}-byte file")
    default = _AXES_CODE[axes]
    stored = _axes_of(raw[SPZ4_HEADER.size : toc_at], default, path) if flags & FLAG_HAS_EXTENSIONS else default
    sizes = [N * 9, N, N * 3, N * 3, N * 4, N * 3 * K1]
    expected = [s for s in sizes if s]
    if count != len(expected):
        raise SpzError(path, f"{count} streams in the table; {N} splats of SH degree {degree} have {len(expected)}")
    at = toc_at + count * _TOC_ENTRY.size
    parts = []
    unpacker = zstandard.ZstdDecompressor()
    for i, want in enumerate(expected):
        packed, size = _TOC_ENTRY.unpack_from(raw, toc_at + i * _TOC_ENTRY.size)
        if size != want:
            raise SpzError(path, f"stream {i} holds {size} bytes, {N} splats need {want}")
        if at + packed > len(raw):
            raise SpzError(path, f"truncated: stream {i} ends at byte {at + packed} of a {len(raw)}-byte file")
        try:
            part = unpacker.decompress(raw[at : at + packed], max_output_size=want)
        except zstandard.ZstdError as e:
            raise SpzError(path, f"corrupt zstd stream {i} ({e})") from None
        if len(part) != want:
            raise SpzError(path, f"stream {i} decompresses to {len(part)} bytes, expected {want}")
        parts.append(part)
        at += packed
    if at != len(raw):
        raise SpzError(path, f"{len(raw) - at} bytes after the last stream")
    return _decode_streams(np.frombuffer(b"".join(parts), dtype=np.uint8), N, 4, K1, frac, stored)


def read_spz(path: str | os.PathLike[str], axes: SpzAxes = "ply") -> Gaussians:
    """Reads a ``.spz`` file (versions 2, 3 and 4) into float32 CPU :class:`Gaussians`.

    ``axes``: how the file's axes relate to ours when its extensions do not say (see SpzAxes).

    Raises :class:`SpzError` (one line, naming the file) for anything it cannot read.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise SpzError(path, f"corrupt or truncated gzip stream ({e})") from None
        gaussians = decode_spz(payload, path, axes)
    elif len(raw) >= 8 and struct.unpack_from("<I", raw)[0] == SPZ_MAGIC:
        version = struct.unpack_from("<I", raw, 4)[0]
        if version < 4:
            raise SpzError(path, f"spz version {version} stream is not gzip-compressed (expected a gzip file)")
        gaussians = decode_spz4(raw, path, axes)
    else:
        raise SpzError(path, "not an spz file (neither gzip nor an NGSP header)")
    check_finite(gaussians, path, SpzError)
    return gaussians
