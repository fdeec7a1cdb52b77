"""PlayCanvas SOG (meta.json version 2): a folder or a ``.sog`` zip of lossless WebP textures.

Files (names as written; a reader resolves them through ``meta.json``)::

    meta.json            version 2, count, antialias, bounds, codebooks, file names
    means_l.webp         RGB: low byte of the 16-bit x, y, z
    means_u.webp         RGB: high byte
    scales.webp          RGB: labels into meta.scales.codebook (256 log-scales)
    quats.webp           RGBA: "smallest three" over (w, x, y, z): RGB the other three
                         components, A = 252 + index of the largest |component|
    sh0.webp             RGBA: RGB labels into meta.sh0.codebook (256 f_dc values),
                         A = round(255 sigmoid(opacity))
    shN_centroids.webp   RGB, 64 palette entries per row, (K-1) texels per entry, texel = labels
                         of the entry's r, g, b coefficient into meta.shN.codebook (optional)
    shN_labels.webp      RGB: R + 256 G = palette index of the splat (optional)

One splat per texel, row-major from the top-left, in Morton order (21 bits per axis).
Textures are W x H with W = ceil(sqrt(N) / 4) * 4 and H = ceil(N / W / 4) * 4 (each at
least 4); trailing texels are zero (quats' alpha 252).

Encodings:

- means: n = sign(v) ln(|v| + 1) per axis; ``mins``/``maxs`` are the per-axis min/max of n;
  q = round(65535 (n - min) / (max - min)) (0 for an empty range); decoded
  n = lerp(min, max, q / 65535), v = sign(n) (exp(|n|) - 1).
- quats: unit q with its largest-magnitude component made positive; each of the other
  three c (in w x y z order) as round(255 (c sqrt(2) / 2 + 0.5)) (rounded, not truncated);
  decoded c = (u / 255 - 0.5) sqrt(2), the largest = sqrt(1 - sum c^2).
- scales and sh0: one 256-entry codebook each, shared by the three channels, fitted by
  1-D k-means (quantile start, Lloyd steps on a sorted sample of at most 2^20 values plus
  the extremes; seeded, vectorised). Every value takes the label of its nearest entry.
- shN: the [K-1, 3] coefficients of each splat are one vector; a palette of at most
  ``shn_palette`` vectors (default :func:`default_palette_size`: N / 32, at least
  min(N, 1024), at most 65536) is fitted by two-level k-means, sqrt(P) coarse cells of
  sqrt(P) entries each (coarse centroids on a subsample, then fine
  centroids inside each coarse cell on a subsample of it, then every splat is assigned
  and each palette entry recomputed as the mean of its members); empty entries are
  dropped. The palette's values are then quantised with a 256-entry 1-D codebook. When the
  palette may hold every distinct vector (``shn_palette >= N``) the palette is exact.

What it keeps: positions to 16 bits of the log-compressed range (relative error about
(|v|+1) range / 131070), rotations to ~0.0028 per component, opacity to 8 bits, scales,
colours and SH to their codebooks. What it loses: the splat order; precision wherever
the codebooks and palette are coarse; SH bands above ``sh_degree`` when asked to write
fewer; the antialias flag on reading. Everything wrong with a file is a :class:`SogError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from splatfield.render import Gaussians
from splatfield.scenes.checkpoint import atomic_write
from splatfield.scenes.formats.common import (
    FormatError,
    check_finite,
    from_arrays,
    logit,
    morton_order,
    normalise_quats,
    pack_smallest_three,
    sigmoid,
    sh_degree_of,
    to_arrays,
    truncate_sh,
    unpack_smallest_three,
)

__all__ = [
    "SogError",
    "SOG_VERSION",
    "CODEBOOK_SIZE",
    "MAX_PALETTE",
    "texture_size",
    "default_palette_size",
    "fit_codebook",
    "assign_codebook",
    "encode_sog",
    "write_sog",
    "read_sog",
]

SOG_VERSION = 2
CODEBOOK_SIZE = 256
MAX_PALETTE = 65536
PALETTE_ROW = 64  # palette entries per row of shN_centroids.webp
_SQRT2 = math.sqrt(2.0)
_WEBP = {"format": "WEBP", "lossless": True, "exact": True, "quality": 25, "method": 1}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class SogError(FormatError):
    """A SOG file or folder that cannot be read or written."""


def texture_size(count: int) -> tuple[int, int]:
    """(width, height) of the per-splat textures for ``count`` splats."""
    width = max(4, math.ceil(math.sqrt(count) / 4) * 4)
    height = max(4, math.ceil(count / width / 4) * 4)
    return width, height


def default_palette_size(count: int) -> int:
    """shN palette size when none is given: N // 32 entries, at least min(N, 1024), at most 65536."""
    return min(MAX_PALETTE, max(min(count, 1024), count // 32, 1))


# -------------------------------------------------------------------------------- codebooks


def fit_codebook(values: np.ndarray, size: int = CODEBOOK_SIZE, *, iters: int = 30, seed: int = 0) -> np.ndarray:
    """A sorted float32 codebook [size] for 1-D ``values`` by k-means (Lloyd) in 1-D.

    Works on a sorted sample (at most 2^20 values, plus the minimum and maximum), where
    each Lloyd step is a searchsorted plus prefix sums. Fewer distinct values than
    ``size`` give those values exactly (the rest repeats the largest).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return np.zeros(size, dtype=np.float32)
    limit = 1 << 20
    if v.size > limit:
        rng = np.random.default_rng(seed)
        v = np.concatenate([v[rng.choice(v.size, limit, replace=False)], [v.min(), v.max()]])
    s = np.sort(v)
    distinct = np.unique(s)
    if distinct.size <= size:
        out = np.full(size, distinct[-1])
        out[: distinct.size] = distinct
        return out.astype(np.float32)
    centroids = np.quantile(s, (np.arange(size) + 0.5) / size)
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    for _ in range(iters):
        bounds = np.searchsorted(s, 0.5 * (centroids[1:] + centroids[:-1]))
        edges = np.concatenate([[0], bounds, [s.size]])
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        new = np.sort(new)
        if np.array_equal(new, centroids):
            break
        centroids = new
    return centroids.astype(np.float32)


def assign_codebook(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """uint8 label of the nearest entry of a sorted ``codebook`` for each value."""
    cb = np.asarray(codebook, dtype=np.float64)
    mids = 0.5 * (cb[1:] + cb[:-1])
    return np.searchsorted(mids, np.asarray(values, dtype=np.float64), side="left").astype(np.uint8)


# --------------------------------------------------------------------------- shN palette


# The distance computations run through torch: its thread pool can be narrowed for the
# many small per-cell problems, where a multi-threaded BLAS is slower than one thread
# (badly so on a busy machine), and restored afterwards.


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _nearest(X: torch.Tensor, C: torch.Tensor, block: int = 1 << 15) -> torch.Tensor:
    """Index [N] of the nearest row of C [K, D] for each row of X [N, D] (squared Euclidean)."""
    half_c2 = 0.5 * (C * C).sum(dim=1)
    out = torch.empty(X.shape[0], dtype=torch.long)
    for start in range(0, X.shape[0], block):
        out[start : start + block] = (X[start : start + block] @ C.T).sub_(half_c2).argmax(dim=1)
    return out


def _means_of(X: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [k, D] float64 of the rows with each label (0 where none), count [k])."""
    counts = torch.bincount(labels, minlength=k)
    sums = torch.zeros(k, X.shape[1], dtype=torch.float64).index_add_(0, labels, X.to(torch.float64))
    return sums / counts.clamp(min=1)[:, None], counts


def _kmeans(X: torch.Tensor, k: int, iters: int, rng: np.random.Generator) -> torch.Tensor:
    """k centroids [k, D] float32 of rows X by Lloyd's algorithm from k distinct random rows."""
    C = X[torch.from_numpy(rng.choice(X.shape[0], k, replace=False))].clone()
    for _ in range(iters):
        means, counts = _means_of(X, _nearest(X, C), k)
        C = torch.where(counts[:, None] > 0, means.to(torch.float32), C)
    return C


def _fit_palette(X_np: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(palette [P, D] float32, labels [N] int64) with P <= size, by two-level k-means."""
    N = X_np.shape[0]
    if size >= N:
        palette, labels = np.unique(X_np, axis=0, return_inverse=True)
        return palette.astype(np.float32), labels.reshape(-1).astype(np.int64)
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(np.ascontiguousarray(X_np, dtype=np.float32))
    k1 = max(1, min(N, math.ceil(math.sqrt(size))))
    k2 = max(1, size // k1)
    sample = X[torch.from_numpy(rng.choice(N, min(N, max(64 * k1, 1 << 16)), replace=False))]
    coarse = _nearest(X, _kmeans(sample, k1, 6, rng))
    order = torch.argsort(coarse, stable=True)
    starts = [0] + torch.cumsum(torch.bincount(coarse, minlength=k1), 0).tolist()
    labels = torch.empty(N, dtype=torch.long)
    offset = 0
    with _one_thread():
        for c in range(k1):  # one step per coarse cell (at most 256), not per splat
            members = order[starts[c] : starts[c + 1]]
            n = members.numel()
            if n == 0:
                continue
            Xc = X[members]
            kc = min(k2, n)
            fit = Xc if n <= 4 * kc else Xc[torch.from_numpy(rng.choice(n, 4 * kc, replace=False))]
            labels[members] = offset + _nearest(Xc, _kmeans(fit, kc, 4, rng))
            offset += kc
    palette, used = _means_of(X, labels, offset)
    keep = used > 0
    remap = torch.cumsum(keep.to(torch.long), 0) - 1
    return palette[keep].to(torch.float32).numpy(), remap[labels].numpy()


# ---------------------------------------------------------------------------------- writing


def _texture(rows: np.ndarray, width: int, height: int, fill: tuple[int, ...] | None = None) -> np.ndarray:
    """Per-splat rows [N, C] uint8 laid out as an image [H, W, C], zero (or ``fill``) padded."""
    N, C = rows.shape
    img = np.zeros((width * height, C), dtype=np.uint8)
    if fill is not None:
        img[:] = fill
    img[:N] = rows
    return img.reshape(height, width, C)


def _webp(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), "RGBA" if img.shape[2] == 4 else "RGB").save(buf, **_WEBP)
    return buf.getvalue()


def _floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float32)]


def encode_sog(
    gaussians: Gaussians,
    *,
    sh_degree: int | None = None,
    shn_palette: int | None = None,
    antialias: bool = False,
    seed: int = 0,
    path: str | os.PathLike[str] = "<memory>",
) -> dict[str, bytes]:
    """The files of a SOG scene: {name: bytes}, ``meta.json`` included.

    ``shn_palette`` caps the shN palette (1..65536; default :func:`default_palette_size`).
    """
    check_finite(gaussians, path, SogError)
    a = to_arrays(gaussians)
    shN = truncate_sh(a["shN"], sh_degree, path, SogError)
    N, K1 = a["means"].shape[0], shN.shape[1]
    width, height = texture_size(N)
    order = morton_order(a["means"])
    files: dict[str, bytes] = {}

    # means: 16-bit of the log-compressed coordinates
    v = a["means"][order].astype(np.float64)
    n = np.sign(v) * np.log1p(np.abs(v))
    mins = n.min(axis=0) if N else np.zeros(3)
    maxs = n.max(axis=0) if N else np.zeros(3)
    rng_ = maxs - mins
    t = np.where(rng_ > 0, (n - mins) / np.where(rng_ > 0, rng_, 1.0), 0.0)
    q16 = np.clip(np.rint(t * 65535.0), 0, 65535).astype(np.uint16)
    files["means_l.webp"] = _webp(_texture((q16 & 0xFF).astype(np.uint8), width, height))
    files["means_u.webp"] = _webp(_texture((q16 >> 8).astype(np.uint8), width, height))

    # scales: labels into a log-scale codebook
    log_s = a["log_scales"][order]
    scale_cb = fit_codebook(log_s, seed=seed)
    files["scales.webp"] = _webp(_texture(assign_codebook(log_s, scale_cb).reshape(N, 3), width, height))

    # quats: smallest three over w x y z
    index, rest = pack_smallest_three(normalise_quats(a["quats"][order]))
    rgb = np.clip(np.rint(255.0 * (rest / _SQRT2 + 0.5)), 0, 255).astype(np.uint8)
    files["quats.webp"] = _webp(
        _texture(np.concatenate([rgb, (252 + index)[:, None].astype(np.uint8)], axis=1), width, height, (0, 0, 0, 252))
    )

    # sh0 + opacity
    dc = a["sh0"].reshape(N, 3)[order]
    sh0_cb = fit_codebook(dc, seed=seed + 1)
    alpha = np.clip(np.rint(sigmoid(a["opacity_logits"][order]) * 255.0), 0, 255).astype(np.uint8)
    files["sh0.webp"] = _webp(
        _texture(np.concatenate([assign_codebook(dc, sh0_cb).reshape(N, 3), alpha[:, None]], axis=1), width, height)
    )

    meta: dict = {
        "version": SOG_VERSION,
        "asset": {"generator": "splatfield"},
        "count": N,
        "antialias": bool(antialias),
        "means": {
            "mins": [float(x) for x in mins],
            "maxs": [float(x) for x in maxs],
            "files": ["means_l.webp", "means_u.webp"],
        },
        "scales": {"codebook": _floats(scale_cb), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": _floats(sh0_cb), "files": ["sh0.webp"]},
    }

    if K1 and N:
        size = shn_palette if shn_palette is not None else default_palette_size(N)
        if not 1 <= size <= MAX_PALETTE:
            raise SogError(path, f"shn_palette must be 1..{MAX_PALETTE}, got {size}")
        X = np.ascontiguousarray(shN[order].reshape(N, K1 * 3), dtype=np.float32)
        palette, labels = _fit_palette(X, size, seed)
        P = palette.shape[0]
        shn_cb = fit_codebook(palette, seed=seed + 2)
        entries = assign_codebook(palette, shn_cb).reshape(P, K1, 3)
        rows_ = math.ceil(P / PALETTE_ROW)
        cent = np.zeros((rows_ * PALETTE_ROW, K1, 3), dtype=np.uint8)
        cent[:P] = entries
        cent = cent.reshape(rows_, PALETTE_ROW * K1, 3)  # entry e, coefficient c -> (e % 64) * K1 + c, e // 64
        files["shN_centroids.webp"] = _webp(cent)
        lab = np.stack([labels & 0xFF, labels >> 8, np.zeros_like(labels)], axis=1).astype(np.uint8)
        files["shN_labels.webp"] = _webp(_texture(lab, width, height))
        meta["shN"] = {
            "count": int(P),
            "bands": sh_degree_of(K1),
            "codebook": _floats(shn_cb),
            "files": ["shN_centroids.webp", "shN_labels.webp"],
        }
    files = {"meta.json": json.dumps(meta, indent=1).encode("utf-8"), **files}
    return files


def write_sog(
    path: str | os.PathLike[str],
    gaussians: Gaussians,
    *,
    sh_degree: int | None = None,
    shn_palette: int | None = None,
    antialias: bool = False,
    seed: int = 0,
) -> None:
    """Writes SOG: a ``.sog`` zip when ``path`` ends in ``.sog``, else a folder (meta.json inside).

    The zip is written atomically; in a folder each file is, meta.json last. The output
    depends only on the scene and ``seed`` (fixed zip time stamps).
    """
    path = Path(path)
    files = encode_sog(
        gaussians, sh_degree=sh_degree, shn_palette=shn_palette, antialias=antialias, seed=seed, path=path
    )
    if path.suffix.lower() == ".sog":

        def write_zip(f) -> None:
            with zipfile.ZipFile(f, "w") as z:
                for name, data in files.items():
                    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
                    info.external_attr = 0o644 << 16
                    z.writestr(info, data)

        atomic_write(path, write_zip)
    else:
        if path.name == "meta.json":
            path = path.parent
        path.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if name != "meta.json":
                atomic_write(path / name, lambda f, d=data: f.write(d))
        atomic_write(path / "meta.json", lambda f: f.write(files["meta.json"]))


# ---------------------------------------------------------------------------------- reading


class _Source:
    """Reads named files out of a SOG folder or zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.folder = path
        elif path.name == "meta.json":
            self.folder = path.parent
        else:
            self.folder = None
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise SogError(path, "not a zip archive (a .sog is a zip of meta.json and WebP textures)") from None

    def read(self, name: str) -> bytes:
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise SogError(self.path, f"meta.json names a file outside the scene: {name!r}")
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.folder / p).read_bytes()
        except KeyError:
            raise SogError(self.path, f"missing file {name!r} in the archive") from None
        except FileNotFoundError:
            raise SogError(self.path, f"missing file {name!r} in the folder") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise SogError(self.path, f"cannot read {name!r} from the archive ({e})") from None

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _image(src: _Source, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(src.read(name))) as im:
            return np.asarray(im.convert("RGBA"))
    except SogError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise SogError(src.path, f"{name}: not a readable image ({type(e).__name__})") from None


def read_sog(path: str | os.PathLike[str]) -> Gaussians:
    """Reads SOG (a ``.sog`` zip, a folder, or the path of its meta.json) into float32 CPU :class:`Gaussians`.

    Splats come back in file (Morton) order. Raises :class:`SogError`.
    """
    path = Path(path)
    src = _Source(path)
    try:
        return _read(src, path)
    finally:
        src.close()


def _read(src: _Source, path: Path) -> Gaussians:
    try:
        meta = json.loads(src.read("meta.json"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SogError(path, f"meta.json is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise SogError(path, "meta.json is not a JSON object")
    version = meta.get("version")
    if version != SOG_VERSION:
        raise SogError(path, f"meta.json version {version!r} is unsupported (only version {SOG_VERSION})")

    def get(*keys: str, kind: type | tuple[type, ...] = object):
        node = meta
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise SogError(path, f"meta.json has no {'.'.join(keys)!r}")
            node = node[k]
        if not isinstance(node, kind) or isinstance(node, bool) and kind is int:
            raise SogError(path, f"meta.json {'.'.join(keys)!r} has the wrong type")
        return node

    def floats(*keys: str, length: int) -> np.ndarray:
        value = get(*keys, kind=list)
        if len(value) != length or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            raise SogError(path, f"meta.json {'.'.join(keys)!r} must be {length} numbers")
        arr = np.asarray(value, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise SogError(path, f"meta.json {'.'.join(keys)!r} has non-finite values")
        return arr

    def files(key: str, length: int) -> list[str]:
        names = get(key, "files", kind=list)
        if len(names) < length or not all(isinstance(n, str) for n in names[:length]):
            raise SogError(path, f"meta.json {key + '.files'!r} must name {length} files")
        return names

    N = get("count", kind=int)
    if N < 0:
        raise SogError(path, f"meta.json count {N} is negative")
    mins = floats("means", "mins", length=3)
    maxs = floats("means", "maxs", length=3)
    scale_cb = floats("scales", "codebook", length=CODEBOOK_SIZE)
    sh0_cb = floats("sh0", "codebook", length=CODEBOOK_SIZE)

    def splat_image(name: str) -> np.ndarray:
        img = _image(src, name)
        if img.shape[0] * img.shape[1] < N:
            raise SogError(path, f"{name} is {img.shape[1]}x{img.shape[0]}: too small for count {N}")
        return img.reshape(-1, 4)[:N]

    lo, hi = files("means", 2)[:2]
    lo_img, hi_img = splat_image(lo), splat_image(hi)
    q16 = lo_img[:, :3].astype(np.float64) + 256.0 * hi_img[:, :3].astype(np.float64)
    t = q16 / 65535.0
    n = mins * (1.0 - t) + maxs * t
    means = np.sign(n) * np.expm1(np.abs(n))

    scales = splat_image(files("scales", 1)[0])[:, :3]
    log_scales = scale_cb[scales]

    quats_img = splat_image(files("quats", 1)[0])
    mode = quats_img[:, 3].astype(np.int64) - 252
    if N and (mode < 0).any():
        i = int(np.nonzero(mode < 0)[0][0])
        raise SogError(path, f"quats texel {i} has alpha {quats_img[i, 3]}; expected 252..255")
    quats = unpack_smallest_three(mode, (quats_img[:, :3].astype(np.float64) / 255.0 - 0.5) * _SQRT2)

    sh0_img = splat_image(files("sh0", 1)[0])
    sh0 = sh0_cb[sh0_img[:, :3]]
    opacity = logit(sh0_img[:, 3].astype(np.float64) / 255.0)

    shN = np.zeros((N, 0, 3))
    if "shN" in meta:
        bands = get("shN", "bands", kind=int)
        if bands not in (1, 2, 3):
            raise SogError(path, f"meta.json shN.bands {bands} must be 1..3")
        K1 = (bands + 1) ** 2 - 1
        P = get("shN", "count", kind=int)
        if not 1 <= P <= MAX_PALETTE:
            raise SogError(path, f"meta.json shN.count {P} must be 1..{MAX_PALETTE}")
        shn_cb = floats("shN", "codebook", length=CODEBOOK_SIZE)
        cent_name, label_name = files("shN", 2)[:2]
        cent = _image(src, cent_name)
        rows_ = math.ceil(P / PALETTE_ROW)
        if cent.shape[1] != PALETTE_ROW * K1 or cent.shape[0] < rows_:
            raise SogError(
                path,
                f"{cent_name} is {cent.shape[1]}x{cent.shape[0]}; {P} entries of {bands} bands need "
                f"{PALETTE_ROW * K1}x{rows_}",
            )
        palette = shn_cb[cent[:rows_, :, :3].reshape(rows_ * PALETTE_ROW, K1, 3)[:P]]
        lab = splat_image(label_name)
        labels = lab[:, 0].astype(np.int64) + 256 * lab[:, 1].astype(np.int64)
        if N and labels.max() >= P:
            i = int(np.argmax(labels >= P))
            raise SogError(path, f"{label_name}: splat {i} has palette index {labels[i]} >= shN.count {P}")
        shN = palette[labels]

    gaussians = from_arrays(means, log_scales, quats, opacity, sh0, shN)
    check_finite(gaussians, path, SogError)
    return gaussians
