"""The INRIA 3DGS ply reader and writer (scenes/formats/ply.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from splatfield.render import Gaussians
from splatfield.scenes.formats import PlyError, ply_property_names, read_ply, write_ply
from splatfield.scenes.formats import ply as ply_module


def _random_gaussians(N: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    K = (degree + 1) ** 2
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    gs = Gaussians(r(N, 3) * 3, r(N, 3) - 4, r(N, 4), r(N) * 2, r(N, 1, 3), r(N, K - 1, 3) * 0.1)
    # values whose bits a careless conversion would lose: -0.0, a denormal, ±inf, a NaN payload
    gs.means[0, 0] = -0.0
    gs.log_scales[0, 1] = 1e-45
    gs.opacity_logits[0] = float("inf")
    gs.quats[0, 3] = float("-inf")
    gs.sh0.view(-1)[:1].view(torch.int32).fill_(0x7FC00123)
    return gs


def _bits_equal(a: Gaussians, b: Gaussians) -> bool:
    return all(
        x.dtype == torch.float32
        and x.shape == y.shape
        and torch.equal(x.view(torch.int32), y.contiguous().view(torch.int32))
        for x, y in zip(b.tensors(), a.tensors())
    )


def _write_custom_ply(path, columns: dict[str, np.ndarray], fmt: str = "binary_little_endian", extra_header: str = ""):
    """Writes a vertex element with the given (name -> 1D array) properties, in dict order."""
    order = "<" if fmt == "binary_little_endian" else ">"
    types = {"f4": "float", "f8": "double", "u1": "uchar", "i4": "int"}
    N = len(next(iter(columns.values())))
    dtype = np.dtype([(n, order + a.dtype.str[1:]) for n, a in columns.items()])
    rec = np.empty(N, dtype=dtype)
    for n, a in columns.items():
        rec[n] = a
    header = f"ply\nformat {fmt} 1.0\ncomment written by a test\n{extra_header}element vertex {N}\n"
    header += "".join(f"property {types[a.dtype.str[1:]]} {n}\n" for n, a in columns.items()) + "end_header\n"
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def _columns_of(gs: Gaussians) -> dict[str, np.ndarray]:
    N, K1 = len(gs), gs.shN.shape[1]
    cols = {}
    for i, n in enumerate("xyz"):
        cols[n] = gs.means[:, i].numpy().copy()
    for c in range(3):
        cols[f"f_dc_{c}"] = gs.sh0[:, 0, c].numpy().copy()
        for k in range(K1):
            cols[f"f_rest_{c * K1 + k}"] = gs.shN[:, k, c].numpy().copy()
    cols["opacity"] = gs.opacity_logits.numpy().copy()
    for i in range(3):
        cols[f"scale_{i}"] = gs.log_scales[:, i].numpy().copy()
    for i in range(4):
        cols[f"rot_{i}"] = gs.quats[:, i].numpy().copy()
    assert len(cols) == 14 + 3 * K1
    return cols


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact(tmp_path, degree):
    gs = _random_gaussians(257, degree, seed=degree)
    path = tmp_path / f"scene{degree}.ply"
    write_ply(path, gs)
    back = read_ply(path)
    assert back.max_sh_degree == degree and len(back) == 257
    assert _bits_equal(gs, back)
    n_props = 17 + 3 * ((degree + 1) ** 2 - 1)
    assert os.path.getsize(path) == len(_header_of(path)) + 257 * 4 * n_props


def _header_of(path) -> bytes:
    data = open(path, "rb").read()
    return data[: data.index(b"end_header\n") + len(b"end_header\n")]


def test_layout_is_the_inria_one(tmp_path):
    gs = _random_gaussians(5, 3, seed=4)
    path = tmp_path / "s.ply"
    write_ply(path, gs)
    header = _header_of(path).decode("ascii").splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 5"]
    names = [line.split()[2] for line in header if line.startswith("property float ")]
    assert len(names) == 62 and names == ply_property_names(3)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    raw = np.frombuffer(open(path, "rb").read()[len(_header_of(path)) :], dtype="<f4").reshape(5, 62)
    col = {n: raw[:, i] for i, n in enumerate(names)}
    assert np.array_equal(col["nx"], np.zeros(5, np.float32))
    # channel-major f_rest: 15 coefficients of red, then green, then blue
    assert np.array_equal(raw[:, 9:24], gs.shN[:, :, 0].numpy())
    assert np.array_equal(raw[:, 24:39], gs.shN[:, :, 1].numpy())
    assert np.array_equal(col["f_rest_44"], gs.shN[:, 14, 2].numpy())
    assert np.array_equal(col["opacity"][1:], gs.opacity_logits[1:].numpy())  # the logit, not sigmoid
    assert np.array_equal(col["rot_0"], gs.quats[:, 0].numpy())  # w first
    assert np.array_equal(col["scale_2"], gs.log_scales[:, 2].numpy())  # log-scales


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
def test_shuffled_properties_extras_and_no_normals(tmp_path, fmt):
    gs = _random_gaussians(40, 2, seed=5)
    cols = _columns_of(gs)
    names = list(cols)
    rng = np.random.default_rng(6)
    rng.shuffle(names)
    shuffled = {n: cols[n] for n in names}
    shuffled["red"] = np.arange(40, dtype=np.uint8)  # extra properties of other types
    shuffled["confidence"] = np.linspace(0, 1, 40)  # float64
    shuffled["nx"] = np.ones(40, np.float32)
    path = tmp_path / "shuffled.ply"
    _write_custom_ply(path, shuffled, fmt)
    # put an element before the vertex (header and data), which the reader must skip over
    data = path.read_bytes()
    head = _header_of(path)
    order = "<" if fmt == "binary_little_endian" else ">"
    cam = np.array([(1, 0.5), (2, 0.75)], dtype=[("id", order + "i4"), ("fov", order + "f8")]).tobytes()
    cam_header = b"element camera 2\nproperty int id\nproperty double fov\n"
    new_head = head.replace(b"comment written by a test\n", b"comment written by a test\n" + cam_header)
    assert new_head != head
    path.write_bytes(new_head + cam + data[len(head) :])
    back = read_ply(path)
    assert _bits_equal(gs, back)


def test_only_float_properties_in_other_order(tmp_path):
    gs = _random_gaussians(30, 1, seed=7)
    cols = _columns_of(gs)
    names = list(reversed(list(cols)))
    path = tmp_path / "reversed.ply"
    _write_custom_ply(path, {n: cols[n] for n in names})
    assert _bits_equal(gs, read_ply(path))


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "scene.ply"
    old = _random_gaussians(10, 1, seed=8)
    write_ply(path, old)
    before = path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ply_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        write_ply(path, _random_gaussians(20, 3, seed=9))
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]  # no temporary left behind

    new = _random_gaussians(20, 3, seed=9)
    write_ply(path, new)
    assert _bits_equal(new, read_ply(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]


def test_empty_scene_round_trips(tmp_path):
    gs = _random_gaussians(3, 2, seed=10).select(torch.zeros(3, dtype=torch.bool))
    path = tmp_path / "empty.ply"
    write_ply(path, gs)
    back = read_ply(path)
    assert len(back) == 0 and back.shN.shape == (0, 8, 3)


# ------------------------------------------------------------------------------------ errors


def _expect_ply_error(path, *words: str) -> str:
    with pytest.raises(PlyError) as info:
        read_ply(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message and "\n" not in message
    for w in words:
        assert w in message, message
    return message


def test_error_not_a_ply(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    _expect_ply_error(p, "not a ply")
    q = tmp_path / "empty.ply"
    q.write_bytes(b"")
    _expect_ply_error(q, "not a ply")
    r = tmp_path / "no_end.ply"
    r.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n")
    _expect_ply_error(r, "end_header")


def test_error_ascii(tmp_path):
    p = tmp_path / "ascii.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0.5\n")
    _expect_ply_error(p, "ascii", "unsupported")


@pytest.mark.parametrize("missing", ["opacity", "rot_3", "f_dc_1", "x", "f_rest_4"])
def test_error_missing_property(tmp_path, missing):
    cols = _columns_of(_random_gaussians(6, 1, seed=11))
    del cols[missing]
    if missing.startswith("f_rest"):
        cols["f_rest_99"] = np.zeros(6, np.float32)  # still nine f_rest, one misnamed
    p = tmp_path / "missing.ply"
    _write_custom_ply(p, cols)
    _expect_ply_error(p, "missing", repr(missing))


def test_error_truncated(tmp_path):
    p = tmp_path / "cut.ply"
    write_ply(p, _random_gaussians(50, 3, seed=12))
    data = p.read_bytes()
    p.write_bytes(data[:-7])
    _expect_ply_error(p, "truncated")
    p.write_bytes(_header_of(p))  # the header only
    _expect_ply_error(p, "truncated")


@pytest.mark.parametrize("count", [3, 10, 44])
def test_error_f_rest_count(tmp_path, count):
    cols = _columns_of(_random_gaussians(4, 0, seed=13))
    for i in range(count):
        cols[f"f_rest_{i}"] = np.zeros(4, np.float32)
    p = tmp_path / "rest.ply"
    _write_custom_ply(p, cols)
    _expect_ply_error(p, f"{count} f_rest", "0, 9, 24 or 45")


def test_error_path_is_reported_for_other_header_problems(tmp_path):
    p = tmp_path / "weird.ply"
    p.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n"
    )
    _expect_ply_error(p, "no 'vertex' element")
