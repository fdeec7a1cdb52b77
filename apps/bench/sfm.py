"""``splatfield bench sfm``: SfM run afresh on photos, its cameras compared with reference poses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import tyro
from typing_extensions import Annotated

from splatfield.scenes.config import at_least

from ..console import PROG, bars, say, sfm_console, write_json
from ..errors import CLIError, check_output_file, require_exists
from ..sfm_choices import SfmCameraModelName, SfmMatcherName


@dataclass(frozen=True)
class BenchSfm:
    """Runs SfM afresh on a folder of photos and compares the recovered cameras with reference
    poses (transforms.json, COLMAP, ...) matched by file name, after a similarity alignment of
    the camera centres: rotation error in degrees, position error relative to the scene extent."""

    source: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGES")]
    """A folder of photos."""
    reference: Annotated[Path, tyro.conf.arg(metavar="DATA")]
    """Dataset with the reference poses (e.g. ../shared/datasets/ingp_fox/transforms.json)."""
    max_size: int = 1600
    """Long side of the copies SfM runs on."""
    matcher: SfmMatcherName = "auto"
    """As `splatfield sfm --matcher`."""
    camera_model: SfmCameraModelName = "SIMPLE_RADIAL"
    """As `splatfield sfm --camera-model`."""
    out: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: a temporary folder)")] = None
    """Keep the SfM output here (must not exist yet)."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the results as JSON (atomically) to FILE."""

    def __post_init__(self) -> None:
        at_least(self.max_size, "max_size", 64)


def run(cfg: BenchSfm) -> int:
    for p in (cfg.source, cfg.reference):
        require_exists(p)
    if cfg.out is not None and cfg.out.exists():
        raise CLIError(f"{cfg.out}: exists already (the bench runs SfM afresh; choose another --out)")
    if cfg.json is not None:
        check_output_file(cfg.json)
    from splatfield.data import sfm
    from splatfield.data.sfm import SfmOptions

    opts = SfmOptions(matcher=cfg.matcher, camera_model=cfg.camera_model, max_size=cfg.max_size)
    with bars() as opened:
        log, on_phase = sfm_console(opened, say)
        r = bench(cfg.source, cfg.reference, opts, cfg.out, log=log, on_phase=on_phase)
    a, s = r["alignment"], r["sfm"]
    print(f"{PROG} bench sfm: {sfm.describe(s)} ({', '.join(f'{k} {v:.1f} s' for k, v in s['stage_seconds'].items())}) "
          f"on {r['machine']['model']}")  # fmt: skip
    print(f"against {cfg.reference} ({a['cameras']} cameras matched by name, similarity on camera centres): rotation "
          f"error mean {a['rotation_error_deg_mean']:.3f} deg, max {a['rotation_error_deg_max']:.3f} deg; position error "
          f"mean {100 * a['position_error_rel_mean']:.2f}%, max {100 * a['position_error_rel_max']:.2f}% of the scene "
          f"extent ({a['extent']:.3g}, the camera rig's radius)")  # fmt: skip
    write_json(cfg.json, r)
    return 0


def bench(source: Path, reference: Path, opts: Any, out: Path | None, log: Callable[[str], None],
          on_phase: Callable[[str, int], Callable[[int], None]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Runs SfM on ``source`` from scratch and compares its cameras with ``reference``'s."""
    import shutil
    import tempfile

    from splatfield.data import sfm
    from splatfield.data.pose_alignment import compare_to_reference

    from ..machine import machine_info

    tmp = None
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="splatfield-bench-sfm-"))
        out = tmp / "sfm"
    try:
        summary = sfm.run_sfm(source, out, opts, log=lambda m: log(f"sfm: {m}"), on_phase=on_phase)
        cmp, missing = compare_to_reference(out, reference)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "source": str(source),
        "reference": str(reference),
        "output": None if tmp is not None else str(out),
        "sfm": summary,
        "alignment": cmp.to_json(),
        "reference_images_not_registered": missing,
        "machine": machine_info(),
    }
