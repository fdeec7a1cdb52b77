"""The compressed splat formats (scenes/formats: splat, compressed_ply, spz, sog, common)
and the ply's interoperability with plyfile.

Round trips compare decode(encode(x)) with x field by field, within tolerances derived
from FORMATS.md (each named below with its derivation). Layout tests compare a tiny file
byte by byte with values worked out by hand from the spec.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import struct
import zipfile

import numpy as np
import pytest
import torch
import zstandard
from PIL import Image

from splatfield.render import Gaussians
from splatfield.scenes.formats import (
    FORMAT_SUFFIX,
    CompressedPlyError,
    FormatError,
    SogError,
    SplatError,
    SpzError,
    detect_format,
    read_compressed_ply,
    read_ply,
    read_sog,
    read_splat,
    read_splats,
    read_spz,
    write_compressed_ply,
    write_ply,
    write_sog,
    write_splat,
    write_splats,
    write_spz,
)
from splatfield.scenes.formats.common import (
    check_finite,
    logit,
    morton_codes,
    morton_order,
    normalise_quats,
    pack_smallest_three,
    sigmoid,
    unpack_smallest_three,
)
from splatfield.scenes.formats.spz import SH_FLIP_RDF_RUB

C0 = 0.28209479177387814
F32 = 1.2e-7  # relative float32 rounding (2^-23)

# ---- tolerances, from FORMATS.md --------------------------------------------------------
# A value rounded to a grid of step h is off by at most h/2. "Smallest three": the three
# stored components are off by at most d; the reconstructed largest w = sqrt(1 - sum c^2)
# (w >= 1/2) by |w'^2 - w^2| / (w' + w) <= (2 d sum|c| + 3 d^2) / (1/2) <= 6 d (1 + d),
# since sum|c| <= sqrt(3) sqrt(1 - w^2) <= 3/2.
OPACITY_TOL = 0.5 / 255  # 8-bit sigmoid(opacity), in sigmoid space (all formats)

SPLAT_COLOUR_TOL = 0.5 / 255  # 8-bit RGB, in RGB space (after clipping to [0, 1])
SPLAT_ROT_TOL = 1.0 / 128  # round(q*128 + 128) clipped: 1/256 from rounding, 1/128 where q = 1 clips to 255
SPLAT_LOG_SCALE_TOL = 2 * F32  # float32 exp then log

# trunc((f/8+0.5)*256) decoded at its bucket's middle: 1/64; the end buckets decode to -4 and 4: 1/32
CPLY_SH_TOL = 1.0 / 64
CPLY_SH_END_TOL = 1.0 / 32


def cply_sh_tol(f: np.ndarray) -> np.ndarray:
    """Per value: the end buckets hold f within 1/32 of -4 or 4."""
    return np.where(np.abs(f) >= 4 - 1 / 32, CPLY_SH_END_TOL, CPLY_SH_TOL) + 1e-6
CPLY_ROT_DELTA = 0.5 * math.sqrt(2) / 1023  # unorm10 over [-1/sqrt2, 1/sqrt2]
CPLY_SCALE_BOUND = 20.0
# positions / log-scales / colours: half a step of the chunk range: range / (2 (2^bits - 1))

SPZ_POS_TOL = 0.5 / 4096  # 12 fractional bits
SPZ_LOG_SCALE_TOL = 0.5 / 16  # round((s + 10) * 16)
SPZ_LOG_SCALE_RANGE = (-10.0, 255 / 16 - 10.0)
SPZ_DC_TOL = 0.5 / (0.15 * 255)  # round(f * 0.15 * 255 + 127.5)
SPZ_DC_RANGE = (-127.5 / 38.25, 127.5 / 38.25)
SPZ_ROT_DELTA = 0.5 * math.sqrt(0.5) / 511  # 9-bit magnitude of |c| / sqrt(1/2)
SPZ_V2_XYZ_DELTA = 0.5 / 127.5  # round(c * 127.5 + 127.5)
# v2 reconstructs w = sqrt(1 - |xyz|^2) with |w'^2 - w^2| <= 2 sqrt(3) d + 3 d^2, so |w' - w| <= sqrt(that)
SPZ_V2_W_TOL = math.sqrt(2 * math.sqrt(3) * SPZ_V2_XYZ_DELTA + 3 * SPZ_V2_XYZ_DELTA**2)
SPZ_SH1_TOL = (8 / 2 + 0.5) / 128  # round(x*128)+128 (0.5 unit), then to a multiple of 8 (4 units)
SPZ_SHREST_TOL = (8 / 2 + 0.5) / 128  # ... also of 8 (5 bits; Niantic's library uses 4 bits, 16)
SPZ_SH_RANGE = (-1.0, 127 / 128)  # u8 0..255

SOG_ROT_DELTA = 0.5 * math.sqrt(2) / 255  # round(255 (c/sqrt2 + 0.5))
SOG_MEAN_Q = 65535  # 16 bits of sign(v) ln(|v|+1) over [min, max]


# ---- scenes ------------------------------------------------------------------------------


def _scene(N: int, degree: int, seed: int = 0) -> Gaussians:
    """A random scene with the awkward cases: tiny and huge scales, opacities at 0 and 1,
    negative w, exact ties between quaternion components, colours and SH out of range."""
    rng = np.random.default_rng(seed)
    K1 = (degree + 1) ** 2 - 1

    def put(arr: np.ndarray, rows) -> None:  # the first rows, as many as the scene has
        rows = np.asarray(rows, dtype=np.float64)
        k = min(len(arr), len(rows))
        arr[:k] = rows[:k]

    means = rng.normal(size=(N, 3)) * 3
    put(means, [[60.0, -45.0, 0.001], [-70.5, 12.0, 30.0], [0.0, 0.0, 0.0], [1e-4, -1e-4, 2.5]])
    log_scales = rng.uniform(-12, 4, size=(N, 3))
    put(log_scales, [[-30.0, -25.0, -11.0], [8.0, 12.0, 5.9], [-10.0, 0.0, 5.0], [-20.5, 20.5, -3.0]])
    opacity = rng.normal(size=N) * 3
    put(opacity, [-25.0, 25.0, 0.0, -9.0, 12.0, 1e-3])
    quats = rng.normal(size=(N, 4))
    quats[: N // 3, 0] = -np.abs(quats[: N // 3, 0])  # negative w
    put(quats, [[0, 1, 0, 0], [0.5, 0.5, -0.5, 0.5], [-3, 0, 0, 0], [0, 0, -2, 2], [7, -1, 2, 0.5]])
    sh0 = rng.normal(size=(N, 1, 3)) * 1.5
    put(sh0, [[[-5.0, 5.0, 0.0]], [[(1 - 0.5) / C0, (0 - 0.5) / C0, 0.3]], [[2.0, -2.0, 4.0]]])
    shN = rng.normal(size=(N, K1, 3)) * 0.3
    if K1 and N >= 3:
        shN[0] = 5.0
        shN[1] = -5.0
        shN[2, :, 0] = 0.999
    return Gaussians(*(torch.tensor(a, dtype=torch.float32) for a in (means, log_scales, quats, opacity, sh0, shN)))


def _np(gs: Gaussians) -> dict[str, np.ndarray]:
    names = ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")
    return {n: getattr(gs, n).numpy().astype(np.float64) for n in names}


def _select(a: dict[str, np.ndarray], order: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[order] for k, v in a.items()}


def _assert_close(name: str, got: np.ndarray, want: np.ndarray, tol) -> None:
    got, want = np.broadcast_arrays(np.asarray(got, np.float64), np.asarray(want, np.float64))
    err = np.abs(got - want)
    tol = np.broadcast_to(np.asarray(tol, np.float64), err.shape)
    bad = err > tol
    worst = int(np.argmax((err - tol).reshape(-1))) if err.size else 0
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} values off; worst error {err.max():.3g} (tolerance "
        f"{tol.reshape(-1)[worst]:.3g}) at {np.unravel_index(worst, err.shape)}: got "
        f"{got.reshape(-1)[worst]}, want {want.reshape(-1)[worst]}"
    )


def _check_smallest_three(got: np.ndarray, original: np.ndarray, delta: float, order=(0, 1, 2, 3)) -> None:
    """Decoded unit quats vs the original (up to sign): stored components within delta,
    the reconstructed one (the original's largest |component|, the first of ties in the
    format's component ``order``, given as w x y z indices) within 6 delta (1 + delta)."""
    b = normalise_quats(original)
    a = np.asarray(got, np.float64)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    a = a * np.sign(np.einsum("ij,ij->i", a, b))[:, None]
    err = np.abs(a - b)
    largest = np.asarray(order)[np.argmax(np.abs(b[:, list(order)]), axis=1)]
    stored = np.arange(4)[None, :] != largest[:, None]
    _assert_close("stored quaternion components", err[stored], 0.0, delta + 1e-6)
    _assert_close("reconstructed quaternion component", err[~stored], 0.0, 6 * delta * (1 + delta) + 1e-6)


def _chunk_bounds(v: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-row min and max of the chunk of ``size`` rows each row is in."""
    N = v.shape[0]
    C = -(-N // size)
    lo = np.empty_like(v)
    hi = np.empty_like(v)
    for c in range(C):  # test-side, per chunk
        s = slice(c * size, (c + 1) * size)
        lo[s], hi[s] = v[s].min(axis=0), v[s].max(axis=0)
    return lo, hi


def _one_line_error(excinfo, path, cls) -> str:
    e = excinfo.value
    assert isinstance(e, cls) and isinstance(e, FormatError) and isinstance(e, ValueError)
    msg = str(e)
    assert "\n" not in msg and msg.startswith(str(path) + ": "), msg
    return msg


# ---- common ------------------------------------------------------------------------------


def test_morton_codes_and_order():
    pts = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    # 10 bits: x -> bits 0,3,..,27; y -> 1,4,..; z -> 2,5,..; the far corner is all ones
    codes = morton_codes(pts, bits=10)
    assert codes[0] == (1 << 30) - 1 and codes[2] == 0
    assert codes[3] == int("001" * 10, 2) and codes[1] == int("010" * 10, 2)
    # the centre quantises to 512 = 0b1000000000 per axis: only the top triple is set
    assert codes[4] == 0b111 << 27
    assert morton_codes(pts, bits=21)[0] == (1 << 63) - 1
    assert morton_order(pts, bits=10).tolist() == [2, 3, 1, 4, 0]
    assert morton_order(torch.tensor(pts), bits=21).tolist() == [2, 3, 1, 4, 0]
    # a flat axis (zero extent) and a permutation for random points
    flat = np.c_[np.arange(6.0), np.zeros(6), np.zeros(6)][::-1]
    assert morton_order(flat).tolist() == [5, 4, 3, 2, 1, 0]
    rnd = np.random.default_rng(0).normal(size=(1000, 3))
    order = morton_order(rnd)
    assert sorted(order.tolist()) == list(range(1000))
    assert (np.diff(morton_codes(rnd)[order].astype(np.float64)) >= 0).all()
    with pytest.raises(ValueError):
        morton_codes(rnd, bits=16)


def test_quaternion_helpers():
    q = np.array([[-2.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, -2.0, 4.0]])
    n = normalise_quats(q)
    assert np.allclose(n, [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0.2, -0.4, 0.4, -0.8]])
    index, rest = pack_smallest_three(n)
    assert index.tolist() == [0, 1, 0, 3]
    assert np.allclose(rest[3], [-0.2, 0.4, -0.4])  # negated so the largest (-0.8) is positive
    back = unpack_smallest_three(index, rest)
    assert np.allclose(np.abs(np.einsum("ij,ij->i", back, n)), 1.0)
    rnd = normalise_quats(np.random.default_rng(1).normal(size=(500, 4)))
    back = unpack_smallest_three(*pack_smallest_three(rnd))
    assert np.allclose(np.abs(np.einsum("ij,ij->i", back, rnd)), 1.0, atol=1e-12)
    assert (np.abs(pack_smallest_three(rnd)[1]) <= math.sqrt(0.5) + 1e-12).all()


def test_sigmoid_and_logit_stay_finite():
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()
    assert abs(sigmoid(logit(np.array([0.0])))[0]) < 1e-6 and sigmoid(logit(np.array([1.0])))[0] > 1 - 1e-6
    x = np.array([-800.0, -5.0, 0.0, 3.0, 800.0])
    assert np.allclose(sigmoid(x), [0.0, 1 / (1 + math.exp(5)), 0.5, 1 / (1 + math.exp(-3)), 1.0])
    assert np.allclose(logit(sigmoid(np.array([-5.0, 0.0, 3.0]))), [-5.0, 0.0, 3.0])
    # 8-bit opacities survive decode + re-encode
    u = np.arange(256)
    assert np.array_equal(np.rint(sigmoid(logit(u / 255)) * 255), u)


def test_check_finite_names_the_field():
    gs = _scene(10, 1)
    check_finite(gs, "x.spz")
    gs.shN[3, 1, 2] = float("nan")
    with pytest.raises(FormatError) as e:
        check_finite(gs, "x.spz")
    assert str(e.value) == "x.spz: Gaussians.shN has NaN values (1 splats, first at index 3)"
    gs = _scene(10, 0)
    gs.means[7, 0] = float("inf")
    with pytest.raises(FormatError, match=r"^x: Gaussians.means has infinite values \(1 splats, first at index 7\)$"):
        check_finite(gs, "x")


# ---- .splat --------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_splat_round_trip(tmp_path, degree):
    gs = _scene(300, degree, seed=10 + degree)
    gs.log_scales[:2] = torch.tensor([[-30.0, -25.0, -11.0], [8.0, 12.0, 5.9]])
    path = tmp_path / "s.splat"
    write_splat(path, gs)
    assert path.stat().st_size == 300 * 32
    back = read_splat(path)
    assert len(back) == 300 and back.max_sh_degree == 0
    a, b = _np(gs), _np(back)
    # the file is sorted by size * opacity: match splats by (exact float32) position
    oa = np.lexsort(a["means"].T[::-1])
    ob = np.lexsort(b["means"].T[::-1])
    a, b = _select(a, oa), _select(b, ob)
    assert np.array_equal(a["means"], b["means"])
    tol = SPLAT_LOG_SCALE_TOL * np.maximum(1, np.abs(a["log_scales"]))
    _assert_close("log-scales", b["log_scales"], a["log_scales"], tol)
    rgb_a = np.clip(0.5 + C0 * a["sh0"], 0, 1)
    _assert_close("colours", 0.5 + C0 * b["sh0"], rgb_a, SPLAT_COLOUR_TOL + 1e-6)
    _assert_close("opacity", sigmoid(b["opacity_logits"]), sigmoid(a["opacity_logits"]), OPACITY_TOL + 1e-6)
    q = normalise_quats(a["quats"])
    _assert_close("quaternions", b["quats"], q, SPLAT_ROT_TOL + 1e-9)
    assert back.shN.shape == (300, 0, 3)


def test_splat_is_sorted_by_size_times_opacity(tmp_path):
    gs = _scene(200, 0, seed=3)
    path = tmp_path / "s.splat"
    write_splat(path, gs)
    rec = np.frombuffer(path.read_bytes(), dtype=[("p", "<f4", 3), ("s", "<f4", 3), ("c", "u1", 4), ("q", "u1", 4)])
    a = _np(gs)
    key = a["log_scales"].sum(1) + np.log(sigmoid(a["opacity_logits"]))
    idx = {tuple(p): i for i, p in enumerate(gs.means.numpy().tolist())}
    file_order = np.array([idx[tuple(p)] for p in rec["p"].tolist()])
    assert np.all(np.diff(key[file_order]) <= 1e-9)


def test_splat_layout_by_hand(tmp_path):
    # splat 0: small and half transparent; splat 1: big and opaque -> written first
    gs = Gaussians(
        means=torch.tensor([[1.0, 2.0, 3.0], [-0.5, 0.25, 8.0]]),
        log_scales=torch.tensor([[math.log(0.5), 0.0, math.log(2.0)], [1.0, 1.0, 1.0]]),
        quats=torch.tensor([[-2.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, -0.8]]),
        opacity_logits=torch.tensor([0.0, 3.0]),
        sh0=torch.tensor([[[(0.2 - 0.5) / C0, (0.4 - 0.5) / C0, (1.3 - 0.5) / C0]], [[0.0, -9.0, (1.0 - 0.5) / C0]]]),
        shN=torch.zeros(2, 3, 3),
    )
    path = tmp_path / "hand.splat"
    write_splat(path, gs)
    data = path.read_bytes()
    assert len(data) == 64
    alpha1 = round(255 / (1 + math.exp(-3.0)))  # 242
    rot1 = (128, 128 + round(0.6 * 128), 128, 128 - round(0.8 * 128))  # (0, .6, 0, -.8): w = 0, x > 0 kept
    first = struct.pack("<3f3f4B4B", -0.5, 0.25, 8.0, *[math.e] * 3, 128, 0, 255, alpha1, *rot1)
    second = struct.pack("<3f3f4B4B", 1.0, 2.0, 3.0, 0.5, 1.0, 2.0, 51, 102, 255, 128, 255, 128, 128, 128)
    assert data[:32] == first and data[32:] == second


def test_splat_errors(tmp_path):
    gs = _scene(4, 0)
    path = tmp_path / "s.splat"
    write_splat(path, gs)
    data = path.read_bytes()
    bad = tmp_path / "truncated.splat"
    bad.write_bytes(data[:-5])
    with pytest.raises(SplatError) as e:
        read_splat(bad)
    assert "not a multiple of 32" in _one_line_error(e, bad, SplatError)
    nan = bytearray(data)
    nan[4:8] = struct.pack("<f", float("nan"))
    bad.write_bytes(bytes(nan))
    with pytest.raises(SplatError) as e:
        read_splat(bad)
    assert "splat 0 has a non-finite position" in _one_line_error(e, bad, SplatError)
    zero_scale = bytearray(data)
    zero_scale[12:16] = struct.pack("<f", 0.0)
    bad.write_bytes(bytes(zero_scale))
    with pytest.raises(SplatError) as e:
        read_splat(bad)
    assert "scale <= 0" in _one_line_error(e, bad, SplatError)
    gs.opacity_logits[2] = float("nan")
    out = tmp_path / "nan.splat"
    with pytest.raises(SplatError) as e:
        write_splat(out, gs)
    assert "Gaussians.opacity_logits has NaN" in _one_line_error(e, out, SplatError)
    assert not out.exists()
    huge = _scene(3, 0)
    huge.log_scales[1, 0] = 200.0  # exp overflows float32
    with pytest.raises(SplatError) as e:
        write_splat(out, huge)
    assert "log_scales[" in _one_line_error(e, out, SplatError)


# ---- .compressed.ply -----------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_compressed_ply_round_trip(tmp_path, degree):
    N = 700  # three chunks, the last one partial
    gs = _scene(N, degree, seed=20 + degree)
    path = tmp_path / "s.compressed.ply"
    write_compressed_ply(path, gs)
    back = read_compressed_ply(path)
    assert len(back) == N and back.max_sh_degree == degree
    a = _select(_np(gs), morton_order(gs.means))
    b = _np(back)

    lo, hi = _chunk_bounds(a["means"])
    steps = np.array([2047, 1023, 2047])
    _assert_close("positions", b["means"], a["means"], (hi - lo) / (2 * steps) + F32 * (np.abs(a["means"]) + 1))
    slo, shi = _chunk_bounds(a["log_scales"])
    slo, shi = np.clip(slo, -CPLY_SCALE_BOUND, CPLY_SCALE_BOUND), np.clip(shi, -CPLY_SCALE_BOUND, CPLY_SCALE_BOUND)
    want = np.clip(a["log_scales"], slo, shi)
    _assert_close("log-scales", b["log_scales"], want, (shi - slo) / (2 * steps) + 1e-5)
    rgb = 0.5 + C0 * a["sh0"][:, 0]
    clo, chi = _chunk_bounds(rgb)
    _assert_close("colours", 0.5 + C0 * b["sh0"][:, 0], rgb, (chi - clo) / (2 * 255) + 1e-5)
    _assert_close("opacity", sigmoid(b["opacity_logits"]), sigmoid(a["opacity_logits"]), OPACITY_TOL + 1e-6)
    _check_smallest_three(b["quats"], a["quats"], CPLY_ROT_DELTA)
    _assert_close("SH", b["shN"], np.clip(a["shN"], -4, 4), cply_sh_tol(a["shN"]))
    # the file is in Morton order
    assert (np.diff(morton_codes(gs.means)[morton_order(gs.means)].astype(np.float64)) >= 0).all()


def test_compressed_ply_fewer_sh_bands(tmp_path):
    gs = _scene(300, 3, seed=2)
    path = tmp_path / "s.compressed.ply"
    write_compressed_ply(path, gs, sh_degree=1)
    back = read_compressed_ply(path)
    assert back.max_sh_degree == 1
    want = np.clip(_np(gs)["shN"][morton_order(gs.means), :3], -4, 4)
    _assert_close("SH band 1", _np(back)["shN"], want, cply_sh_tol(want))
    write_compressed_ply(path, gs, sh_degree=0)
    assert read_compressed_ply(path).max_sh_degree == 0
    assert b"element sh" not in path.read_bytes()[:4000]
    with pytest.raises(CompressedPlyError, match="only has SH degree 1"):
        write_compressed_ply(path, _scene(10, 1), sh_degree=2)


def test_compressed_ply_layout_by_hand(tmp_path):
    s = math.sqrt(0.5)
    rgb = np.array([[0.1, 0.2, 0.9], [0.2, 0.2, 0.75], [0.5, 0.2, 0.7]])  # middle splat at t = 1/4
    gs = Gaussians(
        means=torch.tensor([[0.0, 0.0, 0.0], [0.5, 1.0, 2.0], [1.0, 2.0, 4.0]]),  # Morton order already
        log_scales=torch.tensor([[-1.0, -1.0, -25.0], [0.0, -0.5, 0.0], [1.0, 0.0, 25.0]]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -2.0, 0.0, 0.0], [0.5, 0.5, -0.5, 0.5]]),
        opacity_logits=torch.tensor([0.0, -50.0, 50.0]),
        sh0=torch.tensor((rgb - 0.5) / C0, dtype=torch.float32)[:, None, :],
        shN=torch.tensor(
            [
                [[0.0, 1.0, -4.0], [3.99, 0.0, 0.0], [-0.1, 0.0, 9.0]],  # [coefficient][channel]
                [[0.0] * 3] * 3,
                [[0.0] * 3] * 3,
            ]
        ),
    )
    path = tmp_path / "hand.compressed.ply"
    write_compressed_ply(path, gs)
    data = path.read_bytes()
    header = (
        "ply\nformat binary_little_endian 1.0\nelement chunk 1\n"
        + "".join(
            f"property float {n}\n"
            for n in "min_x min_y min_z max_x max_y max_z min_scale_x min_scale_y min_scale_z "
            "max_scale_x max_scale_y max_scale_z min_r min_g min_b max_r max_g max_b".split()
        )
        + "element vertex 3\nproperty uint packed_position\nproperty uint packed_rotation\n"
        + "property uint packed_scale\nproperty uint packed_color\n"
        + "element sh 3\n"
        + "".join(f"property uchar f_rest_{i}\n" for i in range(9))
        + "end_header\n"
    ).encode("ascii")
    assert data[: len(header)] == header
    body = data[len(header) :]
    assert len(body) == 18 * 4 + 3 * 16 + 3 * 9
    chunk = np.frombuffer(body[:72], "<f4")
    want_chunk = [0, 0, 0, 1, 2, 4, -1, -1, -20, 1, 0, 20, 0.1, 0.2, 0.7, 0.5, 0.2, 0.9]
    assert np.allclose(chunk, want_chunk, atol=1e-6)
    words = np.frombuffer(body[72:120], "<u4").reshape(3, 4)

    def unorm(t, bits):
        return math.floor(t * ((1 << bits) - 1) + 0.5)

    # position: 11/10/11 bits of the chunk box; splat 1 sits in the middle
    assert words[0, 0] == 0 and words[2, 0] == 0xFFFFFFFF
    assert (unorm(0.5, 11), unorm(0.5, 10)) == (1024, 512)
    assert words[1, 0] == (1024 << 21) | (512 << 11) | 1024
    # rotation: index of the largest of (w x y z) in bits 30-31, the others as unorm10(c/sqrt2 + 0.5)
    half = unorm(0.5, 10)
    assert words[0, 1] == (0 << 30) | (half << 20) | (half << 10) | half
    assert words[1, 1] == (1 << 30) | (half << 20) | (half << 10) | half  # (0,-2,0,0) -> x, made positive
    hi, lo = unorm(0.5 * s + 0.5, 10), unorm(-0.5 * s + 0.5, 10)
    assert (hi, lo) == (873, 150)
    assert words[2, 1] == (0 << 30) | (hi << 20) | (lo << 10) | hi  # w largest (first of the ties)
    # scale: log-scales within [-1..1, -1..0, -20..20] (z clamped)
    assert words[0, 2] == 0 and words[2, 2] == 0xFFFFFFFF
    assert words[1, 2] == (unorm(0.5, 11) << 21) | (unorm(0.5, 10) << 11) | unorm(0.5, 11)
    # colour: r<<24 | g<<16 | b<<8 | a; green has an empty range -> 0
    assert words[0, 3] == (0 << 24) | (0 << 16) | (255 << 8) | unorm(0.5, 8)
    assert unorm(0.25, 8) == 64
    assert words[1, 3] == (64 << 24) | (0 << 16) | (64 << 8) | 0
    assert words[2, 3] == (255 << 24) | (0 << 16) | (0 << 8) | 255
    # SH, channel-major: red coefficients 0..2, then green, then blue
    sh = np.frombuffer(body[120:], np.uint8).reshape(3, 9)

    def u8(f):
        return min(255, max(0, math.trunc((f / 8 + 0.5) * 256)))

    assert sh[0].tolist() == [u8(0.0), u8(3.99), u8(-0.1), u8(1.0), u8(0.0), u8(0.0), u8(-4.0), u8(0.0), u8(9.0)]
    assert sh[0].tolist() == [128, 255, 124, 160, 128, 128, 0, 128, 255]
    assert sh[1].tolist() == [128] * 9
    back = read_compressed_ply(path)
    assert np.allclose(back.means.numpy(), gs.means.numpy(), atol=1e-3)


def test_compressed_ply_reads_old_12_float_chunks(tmp_path):
    # older files have no colour range: rgb is stored directly as unorm8 of [0, 1]
    names = "min_x min_y min_z max_x max_y max_z"
    names += " min_scale_x min_scale_y min_scale_z max_scale_x max_scale_y max_scale_z"
    header = "ply\nformat binary_little_endian 1.0\nelement chunk 1\n"
    header += "".join(f"property float {n}\n" for n in names.split())
    header += "element vertex 1\nproperty uint packed_position\nproperty uint packed_rotation\n"
    header += "property uint packed_scale\nproperty uint packed_color\nend_header\n"
    chunk = struct.pack("<12f", 0, 0, 0, 2, 2, 2, -1, -1, -1, 1, 1, 1)
    rotation, colour = (512 << 20) | (512 << 10) | 512, (255 << 24) | (0 << 16) | (51 << 8) | 255
    vertex = struct.pack("<4I", 0xFFFFFFFF, rotation, 0, colour)
    path = tmp_path / "old.compressed.ply"
    path.write_bytes(header.encode() + chunk + vertex)
    g = read_compressed_ply(path)
    assert np.allclose(g.means.numpy(), [[2, 2, 2]]) and np.allclose(g.log_scales.numpy(), [[-1, -1, -1]])
    assert np.allclose(0.5 + C0 * g.sh0.numpy()[0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    assert np.allclose(np.abs(g.quats.numpy()), [[1, 0, 0, 0]], atol=2e-3) and g.opacity_logits[0] > 15


def test_compressed_ply_errors(tmp_path):
    gs = _scene(300, 1)
    path = tmp_path / "s.compressed.ply"
    write_compressed_ply(path, gs)
    data = path.read_bytes()
    bad = tmp_path / "bad.compressed.ply"
    bad.write_bytes(data[:-100])
    with pytest.raises(CompressedPlyError) as e:
        read_compressed_ply(bad)
    assert "truncated" in _one_line_error(e, bad, CompressedPlyError)
    bad.write_bytes(b"PLY" + data[3:])
    with pytest.raises(CompressedPlyError) as e:
        read_compressed_ply(bad)
    assert "not a ply file" in _one_line_error(e, bad, CompressedPlyError)
    bad.write_bytes(data.replace(b"element chunk 2\n", b"element chunk 1\n", 1))
    with pytest.raises(CompressedPlyError) as e:
        read_compressed_ply(bad)
    assert "1 chunks for 300 splats" in _one_line_error(e, bad, CompressedPlyError)
    bad.write_bytes(data.replace(b"element sh 300\n", b"element sh 299\n", 1))
    with pytest.raises(CompressedPlyError) as e:
        read_compressed_ply(bad)
    assert "'sh' element has 299 rows for 300 splats" in _one_line_error(e, bad, CompressedPlyError)
    bad.write_bytes(data.replace(b"property uint packed_scale\n", b"property uint packed_size\n", 1))
    with pytest.raises(CompressedPlyError) as e:
        read_compressed_ply(bad)
    assert "packed_scale" in _one_line_error(e, bad, CompressedPlyError)
    head = data.index(b"end_header\n") + len(b"end_header\n")
    nan = bytearray(data)
    nan[head + 4 : head + 8] = struct.pack("<f", float("nan"))
    bad.write_bytes(bytes(nan))
    with pytest.raises(CompressedPlyError) as e:
        read_compressed_ply(bad)
    assert "chunk 0 has non-finite bounds" in _one_line_error(e, bad, CompressedPlyError)
    gs.log_scales[5, 1] = float("-inf")
    with pytest.raises(CompressedPlyError) as e:
        write_compressed_ply(path, gs)
    assert "Gaussians.log_scales has infinite values" in _one_line_error(e, path, CompressedPlyError)
    assert path.read_bytes() == data  # the old file is untouched


# ---- .spz ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spz_round_trip(tmp_path, degree, version):
    N = 400
    gs = _scene(N, degree, seed=30 + degree)
    path = tmp_path / "s.spz"
    write_spz(path, gs, version=version)
    back = read_spz(path)
    assert len(back) == N and back.max_sh_degree == degree
    a, b = _np(gs), _np(back)  # order is kept
    _assert_close("positions", b["means"], a["means"], SPZ_POS_TOL + F32 * np.abs(a["means"]))
    want_s = np.clip(a["log_scales"], *SPZ_LOG_SCALE_RANGE)
    _assert_close("log-scales", b["log_scales"], want_s, SPZ_LOG_SCALE_TOL + 1e-6)
    _assert_close("opacity", sigmoid(b["opacity_logits"]), sigmoid(a["opacity_logits"]), OPACITY_TOL + 1e-6)
    _assert_close("f_dc", b["sh0"], np.clip(a["sh0"], *SPZ_DC_RANGE), SPZ_DC_TOL + 1e-6)
    _check_smallest_three(b["quats"], a["quats"], SPZ_ROT_DELTA, order=(1, 2, 3, 0))  # x y z w
    want = np.clip(a["shN"], *SPZ_SH_RANGE)
    _assert_close("SH band 1", b["shN"][:, :3], want[:, :3], SPZ_SH1_TOL + 1e-6)
    _assert_close("SH bands 2-3", b["shN"][:, 3:], want[:, 3:], SPZ_SHREST_TOL + 1e-6)


@pytest.mark.parametrize("bits", [(5, 5), (5, 4), (8, 8)])
def test_spz_sh_bits(tmp_path, bits):
    """SH bytes hold multiples of 2^(8 - bits) (centred on 128); 8 bits is plain rounding."""
    gs = _scene(200, 3, seed=2)
    path = tmp_path / "b.spz"
    write_spz(path, gs, sh1_bits=bits[0], sh_rest_bits=bits[1])
    payload = gzip.decompress(path.read_bytes())
    sh = np.frombuffer(payload[-200 * 45 :], np.uint8).reshape(200, 15, 3).astype(int)
    for coeffs, b in ((slice(0, 3), bits[0]), (slice(3, 15), bits[1])):
        step = 2 ** (8 - b)
        inside = sh[:, coeffs][(sh[:, coeffs] > 0) & (sh[:, coeffs] < 255)]
        assert ((inside - 128) % step == 0).all()
        want = np.clip(_np(gs)["shN"][:, coeffs], *SPZ_SH_RANGE)
        _assert_close("SH", _np(read_spz(path))["shN"][:, coeffs], want, (step / 2 + 0.5) / 128 + 1e-6)
    with pytest.raises(SpzError, match="SH bits must be in 1..8, got 9"):
        write_spz(path, gs, sh_rest_bits=9)


def test_spz_version_2_round_trip(tmp_path):
    gs = _scene(300, 2, seed=5)
    path = tmp_path / "v2.spz"
    write_spz(path, gs, version=2)
    payload = gzip.decompress(path.read_bytes())
    assert struct.unpack_from("<I", payload, 4)[0] == 2
    assert len(payload) == 16 + 300 * (9 + 1 + 3 + 3 + 3 + 24)
    back = read_spz(path)
    a, b = _np(gs), _np(back)
    _assert_close("positions", b["means"], a["means"], SPZ_POS_TOL + F32 * np.abs(a["means"]))
    q = normalise_quats(a["quats"])
    got = b["quats"] * np.sign(np.einsum("ij,ij->i", b["quats"], q))[:, None]
    _assert_close("quaternion x y z", got[:, 1:], q[:, 1:], SPZ_V2_XYZ_DELTA + 1e-6)
    _assert_close("quaternion w", got[:, 0], q[:, 0], SPZ_V2_W_TOL)


def test_spz_layout_by_hand(tmp_path):
    s = math.sqrt(0.5)
    gs = Gaussians(
        means=torch.tensor([[1.0, -2.0, 0.5], [-3.25, 0.0, 100.0]]),
        log_scales=torch.tensor([[0.0, -10.0, 5.9375], [-2.5, -12.0, 9.0]]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0], [s, 0.0, s, 0.0]]),  # identity; 90 degrees about y
        opacity_logits=torch.tensor([0.0, 40.0]),
        sh0=torch.tensor([[[0.0, 1.0, -1.0]], [[10.0, -10.0, 0.5]]]),
        shN=torch.tensor([[[0.5, 0.0, -1.0], [0.25, 1.0, 0.0], [0.0, 0.0, 0.1]], [[0.0] * 3] * 3]),
    )
    path = tmp_path / "hand.spz"
    write_spz(path, gs, antialiased=True, axes="rub")
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip
    p = gzip.decompress(raw)
    assert p[:16] == struct.pack("<IIIBBBB", 0x5053474E, 3, 2, 1, 12, 1, 0) and p[:4] == b"NGSP"
    assert len(p) == 16 + 2 * (9 + 1 + 3 + 3 + 4 + 9)
    at = 16
    # positions: right-down-forward -> right-up-back negates y and z; round(v * 4096), 24-bit LE
    fixed = [4096, 8192, -2048, -13312, 0, -409600]
    assert p[at : at + 18] == b"".join(struct.pack("<i", v)[:3] for v in fixed)
    at += 18
    assert list(p[at : at + 2]) == [128, 255]  # round(0.5*255) = 127.5 -> 128 (half away from zero)
    at += 2
    assert list(p[at : at + 6]) == [128, 166, 89, 255, 0, 147]  # round(f*38.25 + 127.5), clamped
    at += 6
    assert list(p[at : at + 6]) == [160, 0, 255, 120, 0, 255]  # round((s+10)*16), clamped
    at += 6
    # rotations, x y z w order after the axis flip: identity -> w largest, nothing else set
    assert struct.unpack_from("<I", p, at)[0] == 3 << 30
    # (s, 0, s, 0) wxyz -> xyzw (0, -s, 0, s): y is the first largest, negative -> q negated;
    # stored x=0, z=0, w=-s: sign bit + magnitude floor(511 * 1 + 0.5) = 511
    assert struct.unpack_from("<I", p, at + 4)[0] == (1 << 30) | (0 << 20) | (0 << 10) | (1 << 9) | 511
    at += 8
    # SH, coefficient-major, channels inner; band-1 coefficients (y, z, x) flip as (-, -, +);
    # round(x*128)+128 rounded to a multiple of 8, clamped to 255
    assert list(p[at : at + 9]) == [64, 128, 255, 96, 0, 128, 128, 128, 144]
    assert list(p[at + 9 :]) == [128] * 9
    back = read_spz(path, axes="rub")
    assert abs(float(back.quats[1] @ torch.tensor([s, 0.0, s, 0.0]))) > 1 - 1e-6  # q or -q
    assert np.allclose(back.means.numpy(), gs.means.numpy(), atol=1e-3)
    # stored as the ply (the default): the same bytes but for the flips
    write_spz(path, gs, antialiased=True)
    q = gzip.decompress(path.read_bytes())
    assert q[16:34] == b"".join(struct.pack("<i", v)[:3] for v in [4096, -8192, 2048, -13312, 0, 409600])
    assert list(q[-18:-9]) == [192, 128, 0, 160, 255, 128, 128, 128, 144]  # band 1 unflipped
    assert read_spz(path).means.numpy().tolist() == back.means.numpy().tolist()


def _real_sh_monomials(p: np.ndarray) -> np.ndarray:
    """The 15 degree-1..3 real SH basis functions (3DGS order) up to their constants."""
    x, y, z = p
    return np.array(
        [y, z, x, x * y, y * z, 2 * z * z - x * x - y * y, x * z, x * x - y * y]
        + [y * (3 * x * x - y * y), x * y * z, y * (4 * z * z - x * x - y * y), z * (2 * z * z - 3 * x * x - 3 * y * y)]
        + [x * (4 * z * z - x * x - y * y), z * (x * x - y * y), x * (x * x - 3 * y * y)]
    )


def test_spz_sh_signs_follow_the_axis_flip(tmp_path):
    # sign of each basis function under (x, y, z) -> (x, -y, -z), derived from the polynomials
    p = np.array([0.3, 0.7, -0.4])
    signs = np.sign(_real_sh_monomials(p * [1, -1, -1]) / _real_sh_monomials(p))
    assert signs.tolist() == [-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1]
    gs = _scene(2, 3)
    gs.shN[:] = 0.5
    path = tmp_path / "signs.spz"
    write_spz(path, gs, axes="rub")
    p = gzip.decompress(path.read_bytes())
    sh = np.frombuffer(p[-2 * 45 :], np.uint8).reshape(2, 15, 3)  # coefficient-major, channels inner
    # round(+-0.5 * 128) + 128 = 192 or 64, both multiples of 8 and 16
    want = np.where(signs > 0, 192, 64)[None, :, None]
    assert np.array_equal(sh, np.broadcast_to(want, sh.shape))
    assert np.allclose(read_spz(path, axes="rub").shN.numpy(), 0.5)
    assert np.allclose(read_spz(path).shN.numpy(), 0.5 * signs[None, :, None])  # read as the ply


def test_spz_reads_a_hand_built_version_2_file(tmp_path):
    # one splat, SH degree 0, rotation as x y z bytes with w reconstructed
    payload = struct.pack("<IIIBBBB", 0x5053474E, 2, 1, 0, 12, 0, 0)
    payload += struct.pack("<i", 4096)[:3] + struct.pack("<i", -4096)[:3] + struct.pack("<i", 2048)[:3]
    payload += bytes([255]) + bytes([128, 128, 128]) + bytes([160, 160, 176])
    payload += bytes([round(0.6 * 127.5 + 127.5), 128, 128])  # RUB x = 0.6 -> w = 0.8
    path = tmp_path / "v2.spz"
    path.write_bytes(gzip.compress(payload))
    g = read_spz(path, axes="rub")
    assert np.allclose(g.means.numpy(), [[1.0, 1.0, -0.5]])
    assert np.allclose(g.log_scales.numpy(), [[0.0, 0.0, 1.0]])
    x = round(0.6 * 127.5 + 127.5) / 127.5 - 1  # 204 -> 0.6
    yz = 128 / 127.5 - 1  # 128 is 1/255 above the centre; RUB -> RDF negates y and z
    assert np.allclose(g.quats.numpy(), [[math.sqrt(1 - x * x - 2 * yz * yz), x, -yz, -yz]], atol=1e-6)
    assert np.allclose(g.sh0.numpy(), (128 / 255 - 0.5) / 0.15, atol=1e-6)
    assert g.opacity_logits[0] > 15


def _spz4_parts(raw: bytes) -> tuple[tuple, list[bytes]]:
    """The header fields and the decompressed streams of a version 4 file, parsed by hand."""
    head = struct.unpack_from("<IIIBBBBI", raw)
    assert raw[24:32] == bytes(8) and head[1] == 4
    count, toc = head[6], head[7]
    sizes = [struct.unpack_from("<QQ", raw, toc + 16 * i) for i in range(count)]
    at, streams = toc + 16 * count, []
    for packed, size in sizes:
        assert raw[at : at + 4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
        streams.append(zstandard.ZstdDecompressor().decompress(raw[at : at + packed]))
        assert len(streams[-1]) == size
        at += packed
    assert at == len(raw)
    return head, streams


@pytest.mark.parametrize("axes", ["ply", "rub"])
@pytest.mark.parametrize("degree", [0, 2])
def test_spz_version_4_holds_the_version_3_streams(tmp_path, degree, axes):
    """Version 4 is version 3's streams, each in its own zstd frame behind an uncompressed
    32-byte header, the axes as Adobe's coordinate-system extension, and a table of contents;
    SH of degree 0 is an empty stream, left out."""
    gs = _scene(120, degree, seed=8)
    write_spz(tmp_path / "v3.spz", gs, antialiased=True, axes=axes)
    write_spz(tmp_path / "v4.spz", gs, version=4, antialiased=True, axes=axes)
    payload = gzip.decompress((tmp_path / "v3.spz").read_bytes())
    raw = (tmp_path / "v4.spz").read_bytes()
    head, streams = _spz4_parts(raw)
    assert head == (0x5053474E, 4, 120, degree, 12, 1 | 2, 6 if degree else 5, 44)
    assert raw[32:44] == struct.pack("<III", 0xADBE0003, 4, {"ply": 6, "rub": 4}[axes])
    assert b"".join(streams) == payload[16:]
    assert [len(s) for s in streams] == [120 * 9, 120, 360, 360, 480] + ([120 * 24] if degree else [])
    a, b = _np(read_spz(tmp_path / "v3.spz", axes=axes)), _np(read_spz(tmp_path / "v4.spz"))  # v4 says its axes
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _spz4_with_extensions(streams: list[bytes], head: tuple, extensions: bytes) -> bytes:
    frames = [zstandard.ZstdCompressor().compress(s) for s in streams]
    toc = 32 + len(extensions)
    out = struct.pack("<IIIBBBBI12x", *head[:5], head[5] | 2, len(frames), toc) + extensions
    return out + b"".join(struct.pack("<QQ", len(f), len(s)) for f, s in zip(frames, streams)) + b"".join(frames)


def test_spz_version_4_coordinate_system_extension(tmp_path):
    """Adobe's coordinate-system extension decides the axes: right-up-back (4) and
    right-down-forward (6, ours) are read; unspecified (0), or no such record, falls back to
    the reader's ``axes``; unknown extensions are skipped; other systems are refused."""
    gs = _scene(60, 1, seed=9)
    write_spz(tmp_path / "v4.spz", gs, version=4, axes="rub")
    head, streams = _spz4_parts((tmp_path / "v4.spz").read_bytes())
    want = _np(read_spz(tmp_path / "v4.spz"))
    assert np.allclose(want["means"], _np(gs)["means"], atol=1e-3)
    other = struct.pack("<II", 0x12340001, 3) + b"abc"
    flip = np.array([1.0, -1.0, -1.0])

    def read(extensions: bytes, **kw) -> dict:
        path = tmp_path / "x.spz"
        path.write_bytes(_spz4_with_extensions(streams, head, extensions))
        return _np(read_spz(path, **kw))

    for ext in (struct.pack("<III", 0xADBE0003, 4, 4), other + struct.pack("<III", 0xADBE0003, 4, 4)):
        for axes in ("ply", "rub"):
            got = read(ext, axes=axes)
            assert all(np.array_equal(got[k], want[k]) for k in want)
    for ext in (other, struct.pack("<III", 0xADBE0003, 4, 0)):
        assert all(np.array_equal(v, want[k]) for k, v in read(ext, axes="rub").items())
        raw = read(ext, axes="ply")
        assert np.allclose(raw["means"], want["means"] * flip)
        assert np.allclose(raw["shN"], want["shN"] * SH_FLIP_RDF_RUB[:3, None])
    assert np.allclose(read(struct.pack("<III", 0xADBE0003, 4, 6), axes="rub")["means"], want["means"] * flip)
    path = tmp_path / "x.spz"
    path.write_bytes(_spz4_with_extensions(streams, head, struct.pack("<III", 0xADBE0003, 4, 8)))
    with pytest.raises(SpzError) as e:
        read_spz(path)
    assert "coordinate system 8" in _one_line_error(e, path, SpzError)
    path.write_bytes(_spz4_with_extensions(streams, head, struct.pack("<II", 0xADBE0003, 40)))
    with pytest.raises(SpzError) as e:
        read_spz(path)
    assert "runs past the extension block" in _one_line_error(e, path, SpzError)


def _spz_refusal(bad):
    """expect(raw, text): ``raw`` written to ``bad`` is refused in one line containing ``text``."""

    def expect(raw: bytes, text: str) -> None:
        bad.write_bytes(raw)
        with pytest.raises(SpzError) as e:
            read_spz(bad)
        assert text in _one_line_error(e, bad, SpzError)

    return expect


def test_spz_version_4_errors(tmp_path):
    gs = _scene(50, 1)
    path = tmp_path / "s.spz"
    write_spz(path, gs, version=4)
    data = path.read_bytes()
    expect = _spz_refusal(tmp_path / "bad.spz")
    expect(data[:20], "a version 4 header needs 32")
    expect(data[:-5], "truncated: stream 5 ends at byte")
    expect(data + b"xx", "2 bytes after the last stream")
    expect(data[:12] + bytes([0]) + data[13:], "6 streams in the table; 50 splats of SH degree 0 have 5")
    expect(data[:16] + struct.pack("<I", 10**6) + data[20:], "table of contents at byte 1000000")
    expect(data[:4] + struct.pack("<I", 5) + data[8:], "spz version 5 is unsupported")
    toc = 44
    broken = bytearray(data)
    first = toc + 16 * 6
    broken[first + 8 : first + 12] = b"\xff\xff\xff\xff"
    expect(bytes(broken), "corrupt zstd stream 0")
    expect(data[:4] + struct.pack("<I", 3) + data[8:], "spz version 3 stream is not gzip-compressed")


def test_spz_errors(tmp_path):
    gs = _scene(50, 1)
    path = tmp_path / "s.spz"
    write_spz(path, gs)
    data = path.read_bytes()
    payload = gzip.decompress(data)
    expect = _spz_refusal(tmp_path / "bad.spz")
    expect(data[: len(data) // 2], "corrupt or truncated gzip stream")
    expect(b"hello, not an spz", "not an spz file")
    expect(gzip.compress(b"XXXX" + payload[4:]), "wrong magic")
    expect(gzip.compress(payload[:10]), "truncated")
    expect(gzip.compress(payload[:-3]), "truncated: 50 splats of version 3 need")
    fewer = payload[:8] + struct.pack("<I", 49) + payload[12:]
    expect(gzip.compress(fewer), "bytes after the streams of 49 splats")
    expect(gzip.compress(payload[:4] + struct.pack("<I", 4) + payload[8:]), "a version 4 header inside a gzip")
    expect(gzip.compress(payload[:4] + struct.pack("<I", 1) + payload[8:]), "spz version 1 is unsupported")
    expect(gzip.compress(payload[:12] + bytes([4]) + payload[13:]), "SH degree 4 is unsupported")
    gs.quats[9, 2] = float("nan")
    with pytest.raises(SpzError) as e:
        write_spz(path, gs)
    assert "Gaussians.quats has NaN" in _one_line_error(e, path, SpzError)


def test_spz_far_positions_use_fewer_fractional_bits(tmp_path):
    gs = _scene(20, 0)
    gs.means[3] = torch.tensor([5000.0, -3000.0, 1.0])
    path = tmp_path / "far.spz"
    write_spz(path, gs)
    assert gzip.decompress(path.read_bytes())[13] == 10  # 5000 * 2^10 < 2^23 <= 5000 * 2^11
    back = read_spz(path)
    _assert_close("positions", back.means.numpy(), gs.means.numpy(), 0.5 / 1024 + 1e-3)


# ---- SOG -----------------------------------------------------------------------------------


def _sog_files(path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir()}
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "WEBP"
        return np.asarray(im.convert("RGBA"))


def _nearest_entry_error(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    cb = np.asarray(codebook, np.float64)
    return np.abs(values[..., None] - cb).min(axis=-1)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("bundle", [True, False])
def test_sog_round_trip(tmp_path, degree, bundle):
    N = 500
    gs = _scene(N, degree, seed=40 + degree)
    path = tmp_path / ("s.sog" if bundle else "s_folder")
    write_sog(path, gs, shn_palette=N)  # a palette of every vector: shN only loses its codebook
    assert path.is_file() == bundle and path.is_dir() == (not bundle)
    back = read_sog(path)
    assert len(back) == N and back.max_sh_degree == degree
    meta = json.loads(_sog_files(path)["meta.json"])
    a = _select(_np(gs), morton_order(gs.means))
    b = _np(back)

    n_range = np.asarray(meta["means"]["maxs"]) - np.asarray(meta["means"]["mins"])
    dn = n_range / (2 * SOG_MEAN_Q)  # half a step of the log-compressed coordinate
    # d(sign(n)(e^|n| - 1)) = e^|n| dn = (|v| + 1) dn
    scale = np.abs(a["means"]) + 1
    _assert_close("positions", b["means"], a["means"], dn * scale * np.exp(dn) + F32 * scale)
    _check_smallest_three(b["quats"], a["quats"], SOG_ROT_DELTA)
    _assert_close("opacity", sigmoid(b["opacity_logits"]), sigmoid(a["opacity_logits"]), OPACITY_TOL + 1e-6)
    # codebooks: every value takes its nearest entry, and the entries are worth having
    for name, key, cb in (("log-scales", "log_scales", "scales"), ("f_dc", "sh0", "sh0")):
        codebook = np.asarray(meta[cb]["codebook"])
        assert codebook.shape == (256,) and (np.diff(codebook) >= 0).all()
        best = _nearest_entry_error(a[key], codebook)
        _assert_close(name, b[key], a[key], best + 1e-6)
        assert np.isin(b[key].astype(np.float32), codebook.astype(np.float32)).all()
        assert np.sqrt(np.mean((b[key] - a[key]) ** 2)) < np.std(a[key]) / 20
    if degree:
        assert meta["shN"]["bands"] == degree and meta["shN"]["count"] == N  # all vectors distinct
        codebook = np.asarray(meta["shN"]["codebook"])
        _assert_close("SH", b["shN"], a["shN"], _nearest_entry_error(a["shN"], codebook) + 1e-6)
    else:
        assert "shN" not in meta


def test_sog_palette_finds_clusters(tmp_path):
    rng = np.random.default_rng(7)
    N, noise = 3000, 0.01
    gs = _scene(N, 3, seed=8)
    centres = rng.normal(size=(24, 15, 3)) * 0.5
    truth = centres[rng.integers(0, 24, N)] + rng.normal(size=(N, 15, 3)) * noise
    gs.shN = torch.tensor(truth, dtype=torch.float32)
    path = tmp_path / "p.sog"
    write_sog(path, gs)  # default palette: 1024 entries for 3000 splats
    meta = json.loads(_sog_files(path)["meta.json"])
    assert 24 <= meta["shN"]["count"] <= 1024
    back = _np(read_sog(path))
    want = truth[morton_order(gs.means)]
    rms = np.sqrt(np.mean((back["shN"] - want) ** 2))
    assert rms < 3 * noise, rms  # the palette resolves the 24 clusters down to the noise
    # a palette of one entry is the mean vector (up to its codebook)
    write_sog(path, gs, shn_palette=1)
    one = _np(read_sog(path))["shN"]
    assert json.loads(_sog_files(path)["meta.json"])["shN"]["count"] == 1
    assert np.allclose(one, truth.mean(axis=0), atol=0.02)


def test_sog_layout_by_hand(tmp_path):
    s = math.sqrt(0.5)
    gs = Gaussians(
        means=torch.tensor([[0.0, -1.0, 2.0], [math.e - 1, 1.0, -2.0]]),
        log_scales=torch.tensor([[-3.0, -3.0, -1.0], [-1.0, -3.0, -3.0]]),
        quats=torch.tensor([[0.0, 0.0, -3.0, 0.0], [0.5, 0.5, -0.5, 0.5]]),
        opacity_logits=torch.tensor([0.0, 50.0]),
        sh0=torch.tensor([[[0.25, 0.5, 0.25]], [[0.5, 0.5, 0.5]]]),
        shN=torch.tensor([[[0.1, 0.2, 0.3]] * 3, [[-0.1, 0.0, 0.1]] * 3]),
    )
    path = tmp_path / "hand"
    write_sog(path, gs, antialias=True)
    files = _sog_files(path)
    names = {"meta.json", "means_l.webp", "means_u.webp", "scales.webp", "quats.webp", "sh0.webp"}
    names |= {"shN_centroids.webp", "shN_labels.webp"}
    assert set(files) == names
    meta = json.loads(files["meta.json"])
    assert set(meta) >= {"version", "count", "antialias", "means", "scales", "quats", "sh0", "shN"}
    assert meta["version"] == 2 and meta["count"] == 2 and meta["antialias"] is True
    assert meta["means"]["files"] == ["means_l.webp", "means_u.webp"]
    assert meta["scales"]["files"] == ["scales.webp"] and meta["quats"]["files"] == ["quats.webp"]
    assert meta["sh0"]["files"] == ["sh0.webp"]
    assert meta["shN"]["files"] == ["shN_centroids.webp", "shN_labels.webp"]
    assert meta["shN"]["bands"] == 1 and meta["shN"]["count"] == 2  # two distinct vectors
    assert len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == len(meta["shN"]["codebook"]) == 256
    # log-compressed bounds: sign(v) ln(|v| + 1)
    assert np.allclose(meta["means"]["mins"], [0.0, -math.log(2), -math.log(3)])
    assert np.allclose(meta["means"]["maxs"], [1.0, math.log(2), math.log(3)])
    # 2 splats -> 4x4 textures (width ceil(sqrt(2)/4)*4, height ceil(2/4/4)*4)
    for n in names - {"meta.json", "shN_centroids.webp"}:
        assert _image(files[n]).shape[:2] == (4, 4), n
    assert _image(files["shN_centroids.webp"]).shape[:2] == (1, 64 * 3)
    # Morton order: splat 0 has the smaller x (x is the lowest Morton bit, y and z tie apart)
    order = morton_order(gs.means)
    lo, hi = _image(files["means_l.webp"]).reshape(-1, 4), _image(files["means_u.webp"]).reshape(-1, 4)
    q16 = lo[:2, :3].astype(int) + 256 * hi[:2, :3].astype(int)
    want = np.where(gs.means.numpy()[order] == gs.means.numpy().max(axis=0), 65535, 0)
    assert np.array_equal(q16, want)
    quats = _image(files["quats.webp"]).reshape(-1, 4)
    i0, i1 = int(np.nonzero(order == 0)[0][0]), int(np.nonzero(order == 1)[0][0])
    # (0, 0, -3, 0): largest is y (index 2) -> made positive; others 0 -> 255 * 0.5 = 127.5 -> 128
    assert quats[i0].tolist() == [128, 128, 128, 252 + 2]
    hi8, lo8 = round(255 * (0.5 * s + 0.5)), round(255 * (-0.5 * s + 0.5))
    assert quats[i1].tolist() == [hi8, lo8, hi8, 252 + 0]
    assert quats[2:].tolist() == [[0, 0, 0, 252]] * 14  # padding
    sh0 = _image(files["sh0.webp"]).reshape(-1, 4)
    assert sh0[i0, 3] == 128 and sh0[i1, 3] == 255  # round(255 sigmoid)
    codebook = np.asarray(meta["sh0"]["codebook"], np.float32)
    assert codebook[sh0[i0, 0]] == np.float32(0.25) and codebook[sh0[i1, 0]] == np.float32(0.5)
    labels = _image(files["shN_labels.webp"]).reshape(-1, 4)
    assert sorted(labels[:2, 0].tolist()) == [0, 1] and labels[:2, 1].tolist() == [0, 0]
    back = read_sog(path / "meta.json")  # the meta.json path works too
    assert np.allclose(back.means.numpy(), gs.means.numpy()[order], atol=1e-3)


def test_sog_errors(tmp_path):
    gs = _scene(40, 1)
    path = tmp_path / "s.sog"
    write_sog(path, gs)
    data = path.read_bytes()
    files = _sog_files(path)
    bad = tmp_path / "bad.sog"

    def zipped(fs: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, d in fs.items():
                z.writestr(n, d)
        return buf.getvalue()

    def expect(raw: bytes, text: str) -> None:
        bad.write_bytes(raw)
        with pytest.raises(SogError) as e:
            read_sog(bad)
        assert text in _one_line_error(e, bad, SogError)

    meta = json.loads(files["meta.json"])
    expect(data[: len(data) // 2], "not a zip archive")
    expect(b"PK\x03\x04 nonsense", "not a zip archive")
    expect(zipped({**files, "meta.json": json.dumps({**meta, "version": 1}).encode()}), "version 1 is unsupported")
    expect(zipped({**files, "meta.json": json.dumps({**meta, "count": 10**6}).encode()}), "too small for count 1000000")
    expect(zipped({**files, "meta.json": b"{not json"}), "meta.json is not valid JSON")
    expect(zipped({k: v for k, v in files.items() if k != "quats.webp"}), "missing file 'quats.webp'")
    expect(zipped({k: v for k, v in files.items() if k != "meta.json"}), "missing file 'meta.json'")
    expect(zipped({**files, "scales.webp": files["scales.webp"][:30]}), "scales.webp: not a readable image")
    cb = list(meta["sh0"]["codebook"])
    cb[3] = float("nan")
    nan_meta = json.dumps({**meta, "sh0": {**meta["sh0"], "codebook": cb}}).encode()
    expect(zipped({**files, "meta.json": nan_meta}), "non-finite")
    small_palette = json.dumps({**meta, "shN": {**meta["shN"], "count": 1}}).encode()
    expect(zipped({**files, "meta.json": small_palette}), "palette index")
    gs.sh0[0, 0, 1] = float("inf")
    with pytest.raises(SogError) as e:
        write_sog(path, gs)
    assert "Gaussians.sh0 has infinite values" in _one_line_error(e, path, SogError)
    folder = tmp_path / "folder"
    write_sog(folder, _scene(10, 0))
    (folder / "sh0.webp").unlink()
    with pytest.raises(SogError) as e:
        read_sog(folder)
    assert "missing file 'sh0.webp' in the folder" in _one_line_error(e, folder, SogError)


def test_sog_write_is_deterministic(tmp_path):
    gs = _scene(300, 2, seed=4)
    write_sog(tmp_path / "a.sog", gs)
    write_sog(tmp_path / "b.sog", gs)
    assert (tmp_path / "a.sog").read_bytes() == (tmp_path / "b.sog").read_bytes()


# ---- dispatch --------------------------------------------------------------------------------


def test_read_and_write_splats_dispatch(tmp_path):
    gs = _scene(300, 1, seed=1)
    for fmt, suffix in FORMAT_SUFFIX.items():
        path = tmp_path / f"scene{suffix}"
        write_splats(path, gs)
        assert detect_format(path) == fmt
        back = read_splats(path)
        assert len(back) == 300
        assert back.max_sh_degree == (0 if fmt == "splat" else 1)
    # a compressed ply under a plain .ply name is recognised by its header
    plain = tmp_path / "renamed.ply"
    plain.write_bytes((tmp_path / "scene.compressed.ply").read_bytes())
    assert detect_format(plain) == "compressed-ply" and len(read_splats(plain)) == 300
    # explicit format, SOG folder (and its meta.json), options passed through
    write_splats(tmp_path / "folder", gs, "sog", shn_palette=4)
    assert detect_format(tmp_path / "folder") == "sog" and detect_format(tmp_path / "folder" / "meta.json") == "sog"
    assert json.loads((tmp_path / "folder" / "meta.json").read_text())["shN"]["count"] <= 4
    write_splats(tmp_path / "x.bin", gs, "spz", sh_degree=0)
    assert read_spz(tmp_path / "x.bin").max_sh_degree == 0
    with pytest.raises(ValueError, match="cannot tell the format"):
        write_splats(tmp_path / "x.bin", gs)
    with pytest.raises(ValueError, match="unknown splat format 'gltf'"):
        write_splats(tmp_path / "x.bin", gs, "gltf")
    with pytest.raises(ValueError, match="unknown splat file type"):
        read_splats(tmp_path / "x.bin")
    with pytest.raises(ValueError, match="without meta.json"):
        read_splats(tmp_path)


def test_empty_scene_every_format(tmp_path):
    gs = _scene(0, 1)
    for suffix in FORMAT_SUFFIX.values():
        path = tmp_path / f"empty{suffix}"
        write_splats(path, gs)
        assert len(read_splats(path)) == 0


# ---- ply interoperability (plyfile) ----------------------------------------------------------


def test_ply_from_plyfile_without_normals_and_shuffled(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    gs = _scene(60, 2, seed=11)
    a = _np(gs)
    K1 = 8
    cols = {"x": a["means"][:, 0], "y": a["means"][:, 1], "z": a["means"][:, 2]}
    for c in range(3):
        cols[f"f_dc_{c}"] = a["sh0"][:, 0, c]
        for k in range(K1):
            cols[f"f_rest_{c * K1 + k}"] = a["shN"][:, k, c]
    cols["opacity"] = a["opacity_logits"]
    for i in range(3):
        cols[f"scale_{i}"] = a["log_scales"][:, i]
    for i in range(4):
        cols[f"rot_{i}"] = a["quats"][:, i]
    names = list(cols)
    np.random.default_rng(0).shuffle(names)
    rec = np.empty(60, dtype=[(n, "<f4") for n in names])
    for n in names:
        rec[n] = cols[n]
    path = tmp_path / "plyfile.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(rec, "vertex")], byte_order="<").write(str(path))
    assert b"property float nx" not in path.read_bytes()[:3000]
    back = read_ply(path)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN"):
        assert torch.equal(getattr(back, name), getattr(gs, name)), name


def test_our_ply_read_by_plyfile(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    gs = _scene(50, 3, seed=12)
    path = tmp_path / "ours.ply"
    write_ply(path, gs)
    v = plyfile.PlyData.read(str(path))["vertex"]
    assert v.count == 50
    a = {n: getattr(gs, n).numpy() for n in ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")}
    assert np.array_equal(np.stack([v["x"], v["y"], v["z"]], 1), a["means"])
    assert np.array_equal(np.stack([v[f"scale_{i}"] for i in range(3)], 1), a["log_scales"])
    assert np.array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], 1), a["quats"])
    assert np.array_equal(v["opacity"], a["opacity_logits"])
    assert np.array_equal(np.stack([v[f"f_dc_{i}"] for i in range(3)], 1), a["sh0"][:, 0])
    rest = np.stack([v[f"f_rest_{i}"] for i in range(45)], 1).reshape(50, 3, 15).transpose(0, 2, 1)
    assert np.array_equal(rest, a["shN"])
    assert np.array_equal(v["nx"], np.zeros(50, np.float32))


def test_ply_write_read_write_is_byte_identical(tmp_path):
    gs = _scene(80, 3, seed=13)
    write_ply(tmp_path / "a.ply", gs)
    write_ply(tmp_path / "b.ply", read_ply(tmp_path / "a.ply"))
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
