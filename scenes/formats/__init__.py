"""splatfield.scenes.formats — reading and writing splat files (FORMATS.md).

- INRIA 3DGS ``.ply``: :func:`read_ply`, :func:`write_ply` (lossless float32)
- antimatter15 ``.splat``: :func:`read_splat`, :func:`write_splat` (32 bytes/splat, no SH)
- PlayCanvas ``.compressed.ply``: :func:`read_compressed_ply`, :func:`write_compressed_ply`
- Niantic ``.spz`` (v2/v3/v4 read, v3 written by default, v4 and v2 on request): :func:`read_spz`, :func:`write_spz`
- PlayCanvas SOG (``.sog`` zip or a folder with meta.json): :func:`read_sog`, :func:`write_sog`

:func:`read_splats` and :func:`write_splats` pick the format from the file name (or the
``format`` argument). Errors are one line naming the file: :class:`PlyError` for the ply,
a :class:`FormatError` subclass for the others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from splatfield.render import Gaussians
from splatfield.scenes.formats.common import FormatError, morton_order
from splatfield.scenes.formats.compressed_ply import (
    CompressedPlyError,
    is_compressed_ply,
    read_compressed_ply,
    write_compressed_ply,
)
from splatfield.scenes.formats.ply import PlyError, ply_property_names, read_ply, write_ply
from splatfield.scenes.formats.sog import SogError, read_sog, write_sog
from splatfield.scenes.formats.splat import SplatError, read_splat, write_splat
from splatfield.scenes.formats.spz import SpzError, read_spz, write_spz

__all__ = [
    "FORMAT_SUFFIX",
    "SplatFormat",
    "CompressedPlyError",
    "FormatError",
    "PlyError",
    "SogError",
    "SplatError",
    "SpzError",
    "detect_format",
    "morton_order",
    "ply_property_names",
    "read_compressed_ply",
    "read_ply",
    "read_sog",
    "read_splat",
    "read_splats",
    "read_spz",
    "write_compressed_ply",
    "write_ply",
    "write_sog",
    "write_splat",
    "write_splats",
    "write_spz",
]

SplatFormat = Literal["ply", "splat", "compressed-ply", "spz", "sog"]

#: The file suffix each format is written with (SOG may also be a folder).
FORMAT_SUFFIX: dict[str, str] = {
    "ply": ".ply",
    "splat": ".splat",
    "compressed-ply": ".compressed.ply",
    "spz": ".spz",
    "sog": ".sog",
}

_READERS = {
    "ply": read_ply,
    "splat": read_splat,
    "compressed-ply": read_compressed_ply,
    "spz": read_spz,
    "sog": read_sog,
}
_WRITERS = {
    "ply": write_ply,
    "splat": write_splat,
    "compressed-ply": write_compressed_ply,
    "spz": write_spz,
    "sog": write_sog,
}


def _format_from_name(path: Path) -> SplatFormat | None:
    name = path.name.lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    if name == "meta.json":
        return "sog"
    for fmt, suffix in FORMAT_SUFFIX.items():
        if name.endswith(suffix):
            return fmt  # type: ignore[return-value]
    return None


def detect_format(path: str | os.PathLike[str]) -> SplatFormat:
    """The format of an existing file or folder: by name, and for ``.ply`` by its header.

    A folder holding ``meta.json`` is SOG. Raises ``ValueError`` when nothing matches.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "meta.json").is_file():
            return "sog"
        raise ValueError(f"{path}: a folder without meta.json is not a SOG scene")
    fmt = _format_from_name(path)
    if fmt in ("ply", "compressed-ply"):
        return "compressed-ply" if is_compressed_ply(path) else "ply"
    if fmt is None:
        raise ValueError(
            f"{path}: unknown splat file type; expected one of {', '.join(FORMAT_SUFFIX.values())} or a SOG folder"
        )
    return fmt


def read_splats(path: str | os.PathLike[str], **opts: Any) -> Gaussians:
    """Reads any supported splat file (or SOG folder) into float32 CPU :class:`Gaussians`;
    ``opts`` go to the format's reader (``axes`` for spz)."""
    return _READERS[detect_format(path)](path, **opts)


def write_splats(
    path: str | os.PathLike[str],
    gaussians: Gaussians,
    format: SplatFormat | None = None,
    **opts: Any,
) -> None:
    """Writes ``gaussians`` in ``format`` (default: from the suffix of ``path``).

    ``opts`` go to the format's writer: ``sh_degree`` (compressed-ply, spz, sog),
    ``version``/``axes``/``antialiased``/``compresslevel`` (spz), ``shn_palette``/``antialias``/
    ``seed`` (sog). For "sog" a path ending in ``.sog`` gets a zip, anything else a folder.
    """
    path = Path(path)
    if format is None:
        format = _format_from_name(path)
        if format is None:
            raise ValueError(
                f"{path}: cannot tell the format from the name; pass format= one of {', '.join(get_args(SplatFormat))}"
            )
    if format not in _WRITERS:
        raise ValueError(f"unknown splat format {format!r}; expected one of {', '.join(get_args(SplatFormat))}")
    _WRITERS[format](path, gaussians, **opts)
