"""The INRIA 3DGS ``.ply`` layout: read and write :class:`~splatfield.render.Gaussians`.

Binary little-endian, one ``vertex`` element, float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 … f_rest_{3(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

Raw parameters as stored in :class:`Gaussians`: ``opacity`` is the logit, ``scale_*`` the
log-scales, ``rot_*`` the quaternion w x y z (unnormalised). ``f_rest`` is channel-major:
all higher-order coefficients of red, then green, then blue, i.e. ``shN`` [N, K-1, 3]
transposed to [N, 3, K-1] and flattened. Normals are written as zeros and ignored.

The reader looks properties up by name, so their order does not matter; it accepts
extra properties (of any scalar type) and extra elements, and big-endian files too.
Everything wrong with a file is a :class:`PlyError`: one line naming the file and the
problem. (Failing to open a file at all stays an ``OSError``.)
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from splatfield.render import Gaussians

__all__ = ["PlyError", "read_ply", "write_ply", "ply_property_names"]

# PLY scalar types (both naming schemes) -> numpy type codes, without byte order.
_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
_MAX_HEADER_BYTES = 1 << 20
_FREST_COUNTS = {0: 0, 9: 1, 24: 2, 45: 3}  # number of f_rest properties -> SH degree


class PlyError(ValueError):
    """A file that is not a readable 3DGS ply: ``path`` and a one-line ``problem``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")


def ply_property_names(sh_degree: int) -> list[str]:
    """The vertex properties written for ``sh_degree`` (0..3), in file order."""
    if sh_degree not in (0, 1, 2, 3):
        raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


# ---------------------------------------------------------------------------------- writing


def write_ply(path: str | os.PathLike[str], gaussians: Gaussians) -> None:
    """Writes ``gaussians`` as an INRIA 3DGS ply, atomically.

    The file is written to a temporary file in the same folder, flushed and fsynced, then
    renamed over ``path`` (``os.replace``): readers see the old file or the new one, never
    a partial one. Values are stored as float32.
    """
    path = Path(path)
    N = len(gaussians)
    names = ply_property_names(gaussians.max_sh_degree)
    rest = gaussians.shN.shape[1]
    data = torch.empty(N, len(names), dtype=torch.float32)

    def flat(t: torch.Tensor, width: int) -> torch.Tensor:  # -> [N, width] float32 on the CPU
        return t.detach().to(device="cpu", dtype=torch.float32).reshape(N, width)

    data[:, 0:3] = flat(gaussians.means, 3)
    data[:, 3:6] = 0.0
    data[:, 6:9] = flat(gaussians.sh0, 3)
    col = 9 + 3 * rest
    if rest:  # channel-major: [N, K-1, 3] -> [N, 3, K-1]
        data[:, 9:col] = flat(gaussians.shN.transpose(1, 2), 3 * rest)
    data[:, col] = flat(gaussians.opacity_logits, 1)[:, 0]
    data[:, col + 1 : col + 4] = flat(gaussians.log_scales, 3)
    data[:, col + 4 : col + 8] = flat(gaussians.quats, 4)
    array = data.numpy().astype("<f4", copy=False)  # a copy only on big-endian machines
    header = "".join(
        ["ply\n", "format binary_little_endian 1.0\n", f"element vertex {N}\n"]
        + [f"property float {name}\n" for name in names]
        + ["end_header\n"]
    ).encode("ascii")

    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(memoryview(array.reshape(-1)).cast("B") if array.size else b"")
            f.flush()
            os.fsync(f.fileno())
        try:  # keep the permissions of the file being replaced; mkstemp's are 0600
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------------------- reading


class _Element:
    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count
        self.properties: list[tuple[str, str]] = []  # (name, numpy type code)
        self.has_list = False


def _parse_header(path: Path, f) -> tuple[str, list[_Element], int]:
    """Returns (byte order '<' or '>', elements, header size in bytes)."""
    head = f.read(4)
    if head[:3] != b"ply" or head[3:4] not in (b"\n", b"\r"):
        raise PlyError(path, "not a ply file (it does not start with 'ply')")
    raw = head + f.read(_MAX_HEADER_BYTES)
    m = re.search(rb"end_header\r?\n", raw)
    if m is None:
        raise PlyError(path, "header has no 'end_header' line (truncated header or not a ply file)")
    header_size = m.end()
    try:
        lines = raw[: m.start()].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise PlyError(path, "header is not ASCII text") from None

    order = None
    elements: list[_Element] = []
    for number, line in enumerate(lines, start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        key = words[0]
        if key == "format":
            fmt = words[1] if len(words) > 1 else ""
            if fmt == "ascii":
                raise PlyError(path, "ascii ply format is unsupported (expected binary_little_endian)")
            if fmt not in ("binary_little_endian", "binary_big_endian"):
                raise PlyError(path, f"unknown ply format {fmt!r} in header line {number}")
            order = "<" if fmt == "binary_little_endian" else ">"
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyError(path, f"malformed element line {number}: {line.strip()!r}")
            elements.append(_Element(words[1], int(words[2])))
        elif key == "property":
            if not elements:
                raise PlyError(path, f"property before any element in header line {number}")
            if len(words) >= 2 and words[1] == "list":
                elements[-1].has_list = True
                elements[-1].properties.append((words[-1], "list"))
                continue
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise PlyError(path, f"malformed property line {number}: {line.strip()!r}")
            elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
        else:
            raise PlyError(path, f"unexpected header line {number}: {line.strip()!r}")
    if order is None:
        raise PlyError(path, "header has no 'format' line")
    return order, elements, header_size


def read_ply(path: str | os.PathLike[str]) -> Gaussians:
    """Reads an INRIA 3DGS ply into float32 CPU :class:`Gaussians` (raises :class:`PlyError`)."""
    path = Path(path)
    with open(path, "rb") as f:
        order, elements, header_size = _parse_header(path, f)
        file_size = os.fstat(f.fileno()).st_size

        vertex = next((el for el in elements if el.name == "vertex"), None)
        if vertex is None:
            raise PlyError(path, "no 'vertex' element")
        offset = header_size
        for el in elements[: elements.index(vertex)]:
            if el.has_list:  # its size is unknown without parsing it
                raise PlyError(path, f"element {el.name!r} before 'vertex' has a list property (unsupported)")
            offset += el.count * sum(int(code[1]) for _, code in el.properties)
        if vertex.has_list:
            names = [n for n, code in vertex.properties if code == "list"]
            raise PlyError(path, f"vertex property {names[0]!r} is a list (unsupported)")

        seen: set[str] = set()
        for name, _ in vertex.properties:
            if name in seen:
                raise PlyError(path, f"vertex property {name!r} appears twice")
            seen.add(name)
        rest_names = [n for n, _ in vertex.properties if n.startswith("f_rest_")]
        if len(rest_names) not in _FREST_COUNTS:
            raise PlyError(
                path, f"has {len(rest_names)} f_rest properties; expected 0, 9, 24 or 45 (SH degree 0 to 3)"
            )
        wanted = ply_property_names(_FREST_COUNTS[len(rest_names)])
        wanted = [n for n in wanted if n not in ("nx", "ny", "nz")]
        for name in wanted:
            if name not in seen:
                raise PlyError(path, f"missing vertex property {name!r}")

        dtype = np.dtype([(name, order + code) for name, code in vertex.properties])
        N = vertex.count
        need = N * dtype.itemsize
        have = max(file_size - offset, 0)
        if have < need:
            raise PlyError(
                path,
                f"truncated data: {N} vertices need {need} bytes after the header, the file has {have}",
            )
        f.seek(offset)
        records = np.fromfile(f, dtype=dtype, count=N)
    if records.shape[0] != N:  # the file shrank while being read
        raise PlyError(path, f"truncated data: read {records.shape[0]} of {N} vertices")

    index = {name: i for i, (name, _) in enumerate(vertex.properties)}
    if all(code == "f4" for _, code in vertex.properties):
        # The usual file: view the records as a float matrix and copy column ranges out of
        # it with torch (strided copies; numpy's fancy indexing is several times slower).
        matrix = records.view(order + "f4").reshape(N, len(vertex.properties))
        if not matrix.dtype.isnative:
            matrix = matrix.astype(np.float32)
        table = torch.from_numpy(matrix)

        def columns(names: list[str]) -> torch.Tensor:  # [N, len(names)] float32, contiguous
            cols = [index[n] for n in names]
            if cols and cols == list(range(cols[0], cols[0] + len(cols))):
                return table[:, cols[0] : cols[0] + len(cols)]
            return table[:, torch.tensor(cols, dtype=torch.long)]
    else:

        def columns(names: list[str]) -> torch.Tensor:
            out = np.empty((N, len(names)), dtype=np.float32)
            for i, n in enumerate(names):
                out[:, i] = records[n]
            return torch.from_numpy(out)

    K1 = len(rest_names) // 3
    rest = columns([f"f_rest_{i}" for i in range(3 * K1)]).reshape(N, 3, K1).transpose(1, 2)
    return Gaussians(
        means=columns(["x", "y", "z"]).contiguous(),
        log_scales=columns(["scale_0", "scale_1", "scale_2"]).contiguous(),
        quats=columns(["rot_0", "rot_1", "rot_2", "rot_3"]).contiguous(),
        opacity_logits=columns(["opacity"]).reshape(N).contiguous(),
        sh0=columns(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(N, 1, 3).contiguous(),
        shN=rest.contiguous(),
    )
