"""The PlayCanvas ``.compressed.ply`` layout: read and write :class:`~splatfield.render.Gaussians`.

Binary little-endian ply with up to three elements, in this order::

    element chunk C        18 floats: min_x min_y min_z max_x max_y max_z
                           min_scale_x min_scale_y min_scale_z max_scale_x max_scale_y max_scale_z
                           min_r min_g min_b max_r max_g max_b
    element vertex N       uint packed_position, uint packed_rotation, uint packed_scale, uint packed_color
    element sh N           uchar f_rest_0 … f_rest_{3(K-1)-1}   (only for SH degree > 0)

Splats are written in Morton order (:func:`~splatfield.scenes.formats.common.morton_order`,
21 bits per axis) and grouped in chunks of 256 (the last one may be shorter); C = ceil(N/256).
Every field of a splat is stored relative to its chunk's bounds:

- ``packed_position``: x, y, z normalised to the chunk box as unorm 11/10/11 bits
  (x in bits 21..31, y in 11..20, z in 0..10); unorm_b(t) = floor(t (2^b - 1) + 0.5) clamped.
- ``packed_scale``: the log-scales, likewise 11/10/11 bits, normalised to the chunk's
  log-scale range whose bounds are clamped to [-20, 20] (log-scales outside are clamped).
- ``packed_color``: r<<24 | g<<16 | b<<8 | a, 8 bits each; rgb = 0.5 + C0 * f_dc normalised
  to the chunk's colour range (not clipped to [0, 1]); a = sigmoid(opacity).
- ``packed_rotation``: "smallest three" over (w, x, y, z): bits 30..31 hold the index of
  the largest |component| (q is negated so that one is positive), bits 20..29, 10..19,
  0..9 the other three in w x y z order as unorm10(c * sqrt(2)/2 + 0.5).
- ``sh``: channel-major like the INRIA ply; u8 = clamp(trunc((f / 8 + 0.5) * 256), 0, 255),
  decoded at the middle of its bucket, ((u8 + 0.5) / 256 - 0.5) * 8, except 0 -> -4 and
  255 -> 4 (PlayCanvas splat-transform 3.7's decoder), so |error| <= 1/64 inside (-4 + 1/32,
  4 - 1/32) and <= 1/32 in the end buckets.

A bounds range of zero stores t = 0. The reader also accepts the older 12-float chunks
(no colour range: rgb stored directly as unorm8 of [0, 1]).

What it keeps: everything, quantised (positions to 1/2047 of a chunk box, log-scales to
1/2047 of the chunk range, colour and opacity to 8 bits, rotations to ~0.0007 per
component, SH to 1/32). What it loses: the splat order, log-scales outside [-20, 20],
SH outside [-4, 4], and SH bands above ``sh_degree`` when asked to write fewer.
Everything wrong with a file is a :class:`CompressedPlyError`: one line naming the file.
"""

from __future__ import annotations

import math
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
    morton_order,
    normalise_quats,
    pack_smallest_three,
    sigmoid,
    to_arrays,
    truncate_sh,
    unpack_smallest_three,
)
from splatfield.scenes.formats.ply import PlyError, _parse_header

__all__ = [
    "CompressedPlyError",
    "CHUNK_SIZE",
    "CHUNK_PROPERTIES",
    "VERTEX_PROPERTIES",
    "SCALE_BOUND",
    "is_compressed_ply",
    "read_compressed_ply",
    "write_compressed_ply",
]

CHUNK_SIZE = 256
SCALE_BOUND = 20.0  # chunk log-scale bounds are clamped to [-SCALE_BOUND, SCALE_BOUND]
CHUNK_PROPERTIES = (
    ["min_x", "min_y", "min_z", "max_x", "max_y", "max_z"]
    + ["min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z"]
    + ["min_r", "min_g", "min_b", "max_r", "max_g", "max_b"]
)
VERTEX_PROPERTIES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
_SQRT1_2 = math.sqrt(0.5)


class CompressedPlyError(FormatError):
    """A ``.compressed.ply`` file that cannot be read or written."""


# ---------------------------------------------------------------------------------- helpers


def _unorm(t: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def _un_unorm(v: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return (v & np.uint32(top)).astype(np.float64) / top


def _normalise(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(v - lo) / (hi - lo), 0 where the range is empty. float64."""
    rng = hi.astype(np.float64) - lo.astype(np.float64)
    ok = rng > 0
    return np.where(ok, (v - lo) / np.where(ok, rng, 1.0), 0.0)


def _chunk_min_max(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk min and max [C, D] of rows [N, D] (the last chunk padded with its last row)."""
    N, D = v.shape
    C = -(-N // CHUNK_SIZE)
    pad = C * CHUNK_SIZE - N
    if pad:
        v = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
    v = v.reshape(C, CHUNK_SIZE, D)
    return v.min(axis=1), v.max(axis=1)


def _pack_111011(t: np.ndarray) -> np.ndarray:
    return (_unorm(t[:, 0], 11) << np.uint32(21)) | (_unorm(t[:, 1], 10) << np.uint32(11)) | _unorm(t[:, 2], 11)


def _unpack_111011(v: np.ndarray) -> np.ndarray:
    return np.stack([_un_unorm(v >> np.uint32(21), 11), _un_unorm(v >> np.uint32(11), 10), _un_unorm(v, 11)], axis=1)


# ---------------------------------------------------------------------------------- writing


def encode_compressed_ply(
    gaussians: Gaussians, *, sh_degree: int | None = None, path: str | os.PathLike[str] = "<memory>"
) -> bytes:
    """The bytes of a ``.compressed.ply`` file for ``gaussians`` (see the module docstring)."""
    check_finite(gaussians, path, CompressedPlyError)
    a = to_arrays(gaussians)
    shN = truncate_sh(a["shN"], sh_degree, path, CompressedPlyError)
    N = a["means"].shape[0]
    C = -(-N // CHUNK_SIZE)
    order = morton_order(a["means"])
    chunk_of = np.arange(N) // CHUNK_SIZE

    means = a["means"][order].astype(np.float64)
    log_s = a["log_scales"][order].astype(np.float64)
    rgb = 0.5 + SH_C0 * a["sh0"].reshape(N, 3)[order].astype(np.float64)
    alpha = sigmoid(a["opacity_logits"][order])

    chunks = np.zeros((C, 18), dtype="<f4")
    if N:
        lo, hi = _chunk_min_max(means)
        chunks[:, 0:3], chunks[:, 3:6] = lo, hi
        lo, hi = _chunk_min_max(log_s)
        chunks[:, 6:9] = np.clip(lo, -SCALE_BOUND, SCALE_BOUND)
        chunks[:, 9:12] = np.clip(hi, -SCALE_BOUND, SCALE_BOUND)
        lo, hi = _chunk_min_max(rgb)
        chunks[:, 12:15], chunks[:, 15:18] = lo, hi
    # normalise against the float32 bounds the file stores, so decoding lerps exactly those
    b = chunks.astype(np.float64)[chunk_of]

    vertex = np.empty((N, 4), dtype="<u4")
    vertex[:, 0] = _pack_111011(_normalise(means, b[:, 0:3], b[:, 3:6]))
    index, rest = pack_smallest_three(normalise_quats(a["quats"][order]))
    r = _unorm(rest * _SQRT1_2 + 0.5, 10)
    vertex[:, 1] = (
        (index.astype(np.uint32) << np.uint32(30)) | (r[:, 0] << np.uint32(20)) | (r[:, 1] << np.uint32(10)) | r[:, 2]
    )
    vertex[:, 2] = _pack_111011(_normalise(log_s, b[:, 6:9], b[:, 9:12]))
    c = _unorm(_normalise(rgb, b[:, 12:15], b[:, 15:18]), 8)
    a8 = _unorm(alpha, 8)
    vertex[:, 3] = (c[:, 0] << np.uint32(24)) | (c[:, 1] << np.uint32(16)) | (c[:, 2] << np.uint32(8)) | a8

    K1 = shN.shape[1]
    header = ["ply", "format binary_little_endian 1.0", f"element chunk {C}"]
    header += [f"property float {name}" for name in CHUNK_PROPERTIES]
    header += [f"element vertex {N}"] + [f"property uint {name}" for name in VERTEX_PROPERTIES]
    parts = [chunks.tobytes(), vertex.tobytes()]
    if K1:
        header += [f"element sh {N}"] + [f"property uchar f_rest_{i}" for i in range(3 * K1)]
        rest_cm = shN[order].transpose(0, 2, 1).reshape(N, 3 * K1).astype(np.float64)  # channel-major
        parts.append(np.clip(np.trunc((rest_cm / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8).tobytes())
    header += ["end_header", ""]
    return "\n".join(header).encode("ascii") + b"".join(parts)


def write_compressed_ply(path: str | os.PathLike[str], gaussians: Gaussians, *, sh_degree: int | None = None) -> None:
    """Writes ``gaussians`` as a PlayCanvas ``.compressed.ply``, atomically.

    ``sh_degree`` (0..3, at most the scene's) writes only that many SH bands; None keeps all.
    """
    path = Path(path)
    data = encode_compressed_ply(gaussians, sh_degree=sh_degree, path=path)
    atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------- reading


def is_compressed_ply(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ply whose header has a ``chunk`` element and ``packed_*`` properties."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    end = head.find(b"end_header")
    head = head[: end if end >= 0 else len(head)]
    return head.startswith(b"ply") and b"element chunk" in head and b"packed_position" in head


def read_compressed_ply(path: str | os.PathLike[str]) -> Gaussians:
    """Reads a PlayCanvas ``.compressed.ply`` into float32 CPU :class:`Gaussians`.

    Splats come back in file (Morton) order. Raises :class:`CompressedPlyError`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            order, elements, header_size = _parse_header(path, f)
        except PlyError as e:
            raise CompressedPlyError(path, e.problem) from None
        f.seek(0)
        data = f.read()

    by_name = {el.name: el for el in elements}
    for name in ("chunk", "vertex"):
        if name not in by_name:
            raise CompressedPlyError(path, f"no '{name}' element (not a compressed ply)")
    offsets: dict[str, int] = {}
    dtypes: dict[str, np.dtype] = {}
    offset = header_size
    for el in elements:
        if el.has_list:
            raise CompressedPlyError(path, f"element {el.name!r} has a list property (unsupported)")
        names = [n for n, _ in el.properties]
        if len(set(names)) != len(names):
            raise CompressedPlyError(path, f"element {el.name!r} has a property twice")
        dtypes[el.name] = np.dtype([(n, order + code) for n, code in el.properties])
        offsets[el.name] = offset
        offset += el.count * dtypes[el.name].itemsize
    if len(data) < offset:
        raise CompressedPlyError(path, f"truncated data: the header describes {offset} bytes, the file has {len(data)}")

    def table(name: str) -> np.ndarray:
        el = by_name[name]
        return np.frombuffer(data, dtype=dtypes[name], count=el.count, offset=offsets[name])

    N = by_name["vertex"].count
    C = by_name["chunk"].count
    if C != -(-N // CHUNK_SIZE):
        want = -(-N // CHUNK_SIZE)
        raise CompressedPlyError(path, f"{C} chunks for {N} splats; expected ceil({N}/{CHUNK_SIZE}) = {want}")
    chunk_names = [n for n, _ in by_name["chunk"].properties]
    has_colour = all(n in chunk_names for n in CHUNK_PROPERTIES[12:])
    for n in CHUNK_PROPERTIES[:12]:
        if n not in chunk_names:
            raise CompressedPlyError(path, f"missing chunk property {n!r}")
    vertex_names = [n for n, _ in by_name["vertex"].properties]
    for n in VERTEX_PROPERTIES:
        if n not in vertex_names:
            raise CompressedPlyError(path, f"missing vertex property {n!r}")

    ct = table("chunk")
    chunks = np.stack([ct[n].astype(np.float64) for n in CHUNK_PROPERTIES if n in chunk_names], axis=1)
    if not np.isfinite(chunks).all():
        i = int(np.nonzero(~np.isfinite(chunks).all(axis=1))[0][0])
        raise CompressedPlyError(path, f"chunk {i} has non-finite bounds")
    vt = table("vertex")
    vertex = np.stack([vt[n].astype(np.uint32) for n in VERTEX_PROPERTIES], axis=1)
    b = chunks[np.arange(N) // CHUNK_SIZE]

    def lerp(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return lo * (1.0 - t) + hi * t

    means = lerp(_unpack_111011(vertex[:, 0]), b[:, 0:3], b[:, 3:6])
    log_s = lerp(_unpack_111011(vertex[:, 2]), b[:, 6:9], b[:, 9:12])
    r = vertex[:, 1]
    rest = np.stack([_un_unorm(r >> np.uint32(s), 10) for s in (20, 10, 0)], axis=1)
    quats = unpack_smallest_three(r >> np.uint32(30), (rest - 0.5) / _SQRT1_2)
    c = vertex[:, 3]
    rgba = np.stack([_un_unorm(c >> np.uint32(s), 8) for s in (24, 16, 8, 0)], axis=1)
    rgb = lerp(rgba[:, :3], b[:, 12:15], b[:, 15:18]) if has_colour else rgba[:, :3]

    if "sh" in by_name:
        el = by_name["sh"]
        if el.count != N:
            raise CompressedPlyError(path, f"'sh' element has {el.count} rows for {N} splats")
        names = [n for n, _ in el.properties]
        n_rest = len(names)
        if n_rest not in (9, 24, 45) or any(f"f_rest_{i}" not in names for i in range(n_rest)):
            raise CompressedPlyError(path, f"'sh' element needs f_rest_0..f_rest_{{8,23,44}}, has {n_rest} properties")
        st = table("sh")
        K1 = n_rest // 3
        cm = np.stack([st[f"f_rest_{i}"].astype(np.float64) for i in range(n_rest)], axis=1)
        unit = np.where(cm == 0, 0.0, np.where(cm == 255, 1.0, (cm + 0.5) / 256.0))
        shN = ((unit - 0.5) * 8.0).reshape(N, 3, K1).transpose(0, 2, 1)
    else:
        shN = np.zeros((N, 0, 3))

    gaussians = from_arrays(
        means=means,
        log_scales=log_s,
        quats=quats,
        opacity_logits=logit(rgba[:, 3]),
        sh0=(rgb - 0.5) / SH_C0,
        shN=shN,
    )
    check_finite(gaussians, path, CompressedPlyError)
    return gaussians
