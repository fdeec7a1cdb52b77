"""Errors the command line reports as one line ``splatfield: error: <file or option>: <problem>``.

:class:`CLIError` carries its exit status (2: bad input, 1: the environment). The errors
of the layers below that name what the user gave (a file, a run directory, an option) are
recognised by :func:`is_input_error` among the modules already imported, so that parsing
stays free of heavy imports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


class CLIError(Exception):
    """An error reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


_INPUT_ERRORS = (
    ("splatfield.scenes.config", "ConfigError"),
    ("splatfield.scenes.run", "RunError"),
    ("splatfield.apps.bench.scene", "InputError"),
    ("splatfield.data.dataset", "DatasetError"),
    ("splatfield.scenes.formats.ply", "PlyError"),
    ("splatfield.scenes.formats.common", "FormatError"),
    ("splatfield.render.camera_paths", "CameraPathError"),
    ("splatfield.render.device", "DeviceError"),
    ("splatfield.apps.sources", "ElasticError"),
    ("splatfield.scenes.mesh", "MeshError"),
)


def is_input_error(exc: BaseException) -> bool:
    for module, name in _INPUT_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def check_output_file(path: Path) -> None:
    """A file a command will write (--json): its folder exists and is writable."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CLIError(f"{path}: is a directory")
    if not folder.is_dir():
        raise CLIError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"{path}: folder {folder} is not writable")


def require_exists(path: Path) -> None:
    if not path.exists():
        raise CLIError(f"{path}: no such file or directory")
