"""Checkpoints: atomic writes (temp file + fsync + rename), the last ``keep`` kept.

A checkpoint is one ``torch.save``d dict (see ``Trainer.state_dict``) named
``step_<NNNNNNN>.pt``; a crash or a signal during a write leaves the previous checkpoints
and at most a stray ``*.tmp`` file, never a truncated checkpoint under a real name.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step_(\d+)\.pt$")


def atomic_write(path: Path, write: Any) -> None:
    """Calls ``write(file)`` on a temp file next to ``path``, fsyncs it, renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it 0600; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(folder: Path, step: int, state: dict, keep: int = 3) -> Path:
    """Writes ``state`` as the checkpoint of ``step``; removes all but the newest ``keep``."""
    path = Path(folder) / f"step_{step:07d}.pt"
    atomic_write(path, lambda f: torch.save(state, f))
    for _, old in checkpoints(folder)[: -max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1][1] if found else None


def load_checkpoint(path: Path) -> dict:
    # weights_only: a checkpoint holds tensors, numbers, strings and dicts; nothing is executed.
    return torch.load(path, map_location="cpu", weights_only=True)


def write_json_atomic(path: Path | str, obj: object) -> None:
    """Writes ``obj`` as JSON to ``path`` via a temporary file in the same folder and a rename."""
    import json

    atomic_write(Path(path), lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
