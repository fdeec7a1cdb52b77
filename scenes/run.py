"""The run directory, the unit every command exchanges.

A run holds ``config.yaml`` (its :class:`~splatfield.scenes.options.RunConfig`, validated
when read), ``checkpoints/step_NNNNNNN.pt`` (atomic writes, the newest k kept),
``scene.ply``, ``cameras.json``, ``metrics.json``, ``refinements.jsonl`` and ``renders/``.
:class:`Run` creates and opens one, reads and updates its config (the replaced one is kept
beside it), finds and loads checkpoints, rebuilds the scene of a checkpoint whatever its
kind, and numbers outputs so that none is overwritten. Problems are :class:`RunError`:
one line naming the file. Torch is imported only when a checkpoint is touched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .config import ConfigError
from .options import RunConfig

CONFIG = "config.yaml"


class RunError(Exception):
    """A problem with a run directory, reported as one line naming the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def read_config(path: Path) -> RunConfig:
    """A run's ``config.yaml`` (either layout), every value checked."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
        return RunConfig.from_document(doc)
    except FileNotFoundError:
        raise RunError(path, "not found (is this a run directory?)") from None
    except yaml.YAMLError as e:
        raise RunError(path, f"not a splatfield run config ({str(e).splitlines()[0]})") from None
    except ConfigError as e:
        raise RunError(path, f"not a valid splatfield run config ({e})") from None


def config_text(config: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_document(), sort_keys=False)


def numbered_output(base: Path, stem: str, suffix: str) -> Path:
    """``base/stem+suffix``, or ``stem-1``, ``stem-2``... when taken (``base`` is created)."""
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        path = base / (stem + ("" if k == 0 else f"-{k}") + suffix)
        if not path.exists():
            return path
    raise RunError(base, f"too many {stem} outputs")


def scene_from_state_dict(state: dict, device: Any = "cpu") -> Any:
    """The trainable scene of a checkpoint's ``scene`` entry, by its kind (runs made before
    kinds were recorded hold Gaussians)."""
    kind = state.get("kind", "gaussians")
    if kind == "gaussians":
        from .gaussian_scene import GaussianScene

        return GaussianScene.from_state_dict(state, device=device)
    if kind == "field":
        from .field_scene import FieldScene

        return FieldScene.from_state_dict(state, device=device)
    raise ValueError(f"scene kind {kind!r} is not one this splatfield knows")


class Run:
    """An existing or new run directory."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = Path(path)
        self.config = config

    # ------------------------------------------------------------------ create / open

    @classmethod
    def open(cls, path: Path) -> Run:
        return cls(Path(path), read_config(Path(path) / CONFIG))

    @classmethod
    def create(cls, path: Path, config: RunConfig) -> Run:
        """A new run directory (refused when it holds a run already)."""
        path = Path(path)
        if cls.holds_run(path):
            raise RunError(path, f"already holds a run (continue it with --resume {path}, or choose another --out)")
        run = cls(path, config)
        path.mkdir(parents=True, exist_ok=True)
        run._write_config(config)
        return run

    @staticmethod
    def holds_run(path: Path) -> bool:
        ckpts = Path(path) / "checkpoints"
        return ckpts.is_dir() and any(ckpts.iterdir())

    def _write_config(self, config: RunConfig) -> None:
        from .checkpoint import atomic_write

        text = config_text(config).encode()
        atomic_write(self.path / CONFIG, lambda f: f.write(text))

    def update_config(self, config: RunConfig, why: str) -> Path | None:
        """Saves a changed config; the one it replaces stays beside it as ``config.<why>.yaml``
        (numbered). Returns where the old one went, or None when nothing changed."""
        if config == self.config:
            return None
        old = numbered_output(self.path, f"config.{why}", ".yaml")
        old.write_text((self.path / CONFIG).read_text())
        self._write_config(config)
        self.config = config
        return old

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, step: int | None = None) -> Path:
        """The latest checkpoint, or the one of ``step``; RunError when there is none."""
        from .checkpoint import checkpoints

        found = checkpoints(self.checkpoints_dir)
        if not found:
            raise RunError(self.checkpoints_dir, "no checkpoint")
        if step is None:
            return found[-1][1]
        for s, p in found:
            if s == step:
                return p
        raise RunError(self.checkpoints_dir, f"no checkpoint of step {step} (there are: {', '.join(str(s) for s, _ in found)})")

    def load_state(self, step: int | None = None) -> tuple[dict, Path]:
        from .checkpoint import load_checkpoint

        path = self.checkpoint_path(step)
        return load_checkpoint(path), path

    def save_checkpoint(self, step: int, state: dict) -> Path:
        from .checkpoint import save_checkpoint

        return save_checkpoint(self.checkpoints_dir, step, state, keep=self.config.outputs.keep_checkpoints)

    def set_aside_checkpoints_after(self, step: int) -> Path | None:
        """Moves the checkpoints later than ``step`` into ``checkpoints/after-<step>-<time>/``
        (a resume from an earlier checkpoint would otherwise mix two histories); returns it."""
        from .checkpoint import checkpoints

        later = [p for s, p in checkpoints(self.checkpoints_dir) if s > step]
        if not later:
            return None
        aside = self.checkpoints_dir / f"after-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for p in later:
            p.rename(aside / p.name)
        return aside

    # ------------------------------------------------------------------ the scene

    def scene(self, step: int | None = None, device: Any = "cpu") -> Any:
        """The run's scene as a ``Renderable`` on ``device``: its latest checkpoint (what ``eval``
        measures), else ``scene.ply``."""
        return self.scene_and_elastic(step, device)[0]

    def scene_and_elastic(self, step: int | None = None, device: Any = "cpu") -> tuple[Any, Any]:
        """:meth:`scene`, and the run's elastic model (``scenes/elastic.py``: selector and
        transform) from the same checkpoint, read once; None when the run has no trained one
        (not made with the elastic strategy, stopped before its phase, or no checkpoint)."""
        from .checkpoint import checkpoints

        if checkpoints(self.checkpoints_dir) or step is not None:
            state, _ = self.load_state(step)
            scene = scene_from_state_dict(state["scene"], device).snapshot()
            saved = next((s["state"] for s in state.get("strategies", ()) if s["name"] == "elastic"), None)
            if saved is None or saved["model"] is None:
                return scene, None
            from .strategies.elastic import elastic_model_from_state

            return scene, elastic_model_from_state(saved, device)
        if (self.path / "scene.ply").is_file():
            from .formats.ply import read_ply
            from .gaussian_scene import FixedGaussians

            return FixedGaussians(read_ply(self.path / "scene.ply").to(device=device)), None
        raise RunError(self.path, "no checkpoint and no scene.ply")
