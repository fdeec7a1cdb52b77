"""``splatfield doctor``: one screen for a bug report — versions, which native extensions
built (and from which cache), the devices torch sees, threads, optional dependencies — and
exit 1, with a last line naming the problem, when what was asked for cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from typing_extensions import Annotated

from .console import PROG
from .errors import check_output_file

# optional dependency (import name, distribution) -> what needs it
DEPENDENCIES = {
    ("pycolmap", "pycolmap"): "SfM",
    ("viser", "viser"): "viewer",
    ("imageio_ffmpeg", "imageio-ffmpeg"): "video",
    ("diffusers", "diffusers"): "lifting guidance",
    ("playwright", "playwright"): "browser tests",
}


@dataclass(frozen=True)
class Doctor:
    """Prints what a bug report needs: splatfield, Python, torch and CUDA versions, the
    compilers, each native extension's build (built, failed with the compiler's first error
    and the log, or why it was not attempted) and cache folder, the devices torch sees,
    threads, and the SfM/viewer/browser dependencies. Exits 1 when the CPU kernels failed to
    build, or --device cannot run natively here."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """The device you mean to use: auto (CUDA when torch sees a GPU, else the CPU), cpu or cuda."""
    json: Annotated[Optional[Path], tyro.conf.arg(metavar="FILE", help_behavior_hint="(default: no file)")] = None
    """Also write the report as JSON to FILE."""


def _first_line(cmd: list[str], pick: str = "") -> str | None:
    """The first line of a tool's output (containing ``pick``), None if it does not run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.splitlines() if pick in ln and ln.strip()]
    return lines[0] if lines else None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def gather(device: str) -> dict:
    """The report as plain data (what --json writes)."""
    import warnings
    from importlib.util import find_spec

    import torch

    from splatfield.render import _ext

    from .machine import machine_info
    from .viewer.protocol import find_chromium

    with warnings.catch_warnings():  # a failed CUDA build's warning: the report says it
        warnings.simplefilter("ignore")
        builds = _ext.build_status()
    nvcc = _ext.find_nvcc()
    cxx = os.environ.get("CXX", "c++")  # the compiler torch.utils.cpp_extension runs
    gpus = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                     "compute_capability": f"{p.major}.{p.minor}"})  # fmt: skip
    deps = {name: {"version": _version(dist) if find_spec(name) else None, "for": why}
            for (name, dist), why in DEPENDENCIES.items()}  # fmt: skip
    deps["chromium"] = {"version": find_chromium(), "for": "browser tests"}
    settings = ("SPLATFIELD_CACHE", "SPLATFIELD_CUDA_BUILD", "SPLATFIELD_PLANT_BAD_SOURCE", "TORCH_CUDA_ARCH_LIST",
                "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "CXX")  # fmt: skip
    report = {
        "splatfield": {"version": _version("splatfield"), "path": str(Path(__file__).resolve().parents[1])},
        "python": {"version": sys.version.split()[0], "executable": sys.executable},
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda, "arch_list": torch.cuda.get_arch_list()},
        "compiler": {"command": cxx, "version": _first_line([cxx, "--version"])},
        "nvcc": {"path": nvcc, "version": _first_line([nvcc, "--version"], "release") if nvcc else None},
        "cache": str(_ext.cache_root()),
        "extensions": builds,
        "kernels": _ext.kernel_groups() if builds["cpu"]["state"] == "built" else {},
        "devices": {"cpu": machine_info(), "cuda": gpus},
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "logical_cores": os.cpu_count()},
        "dependencies": deps,
        "settings": {k: os.environ[k] for k in settings if k in os.environ},
        "device": device,
    }
    sees_cuda = torch.cuda.is_available()
    report["runs_on"] = "cuda" if device == "cuda" or (device == "auto" and sees_cuda) else "cpu"
    report["problems"] = problems(report, sees_cuda, _ext.unavailable_reason(torch.device("cuda")))
    return report


def problems(report: dict, sees_cuda: bool, cuda_reason: str | None) -> list[str]:
    """What cannot work of what was asked for (empty: all is well)."""
    found = []
    cpu = report["extensions"]["cpu"]
    if cpu["state"] != "built":
        found.append(f"the CPU extension failed to build: {cpu['reason']} (log: {cpu['log']}); every render "
                     "falls back to the slow PyTorch reference")  # fmt: skip
    torch_ = report["torch"]
    if report["device"] == "cuda" and not sees_cuda:
        build = "a CPU-only build" if torch_["cuda"] is None else f"CUDA {torch_['cuda']}"
        found.append(f"--device cuda: torch {torch_['version']} ({build}) sees no CUDA device")
    elif report["device"] in ("cuda", "auto") and sees_cuda and cuda_reason is not None:
        found.append(f"--device {report['device']} runs on CUDA here, but {cuda_reason}")
    return found


def _build_line(b: dict) -> str:
    if b["state"] == "built":
        return f"built, {b['cache_dir']}"
    if b["state"] == "compiled":
        return f"compiled only (SPLATFIELD_CUDA_BUILD=compile-only: nvcc -c passed, nothing loaded), {b['cache_dir']}"
    if b["state"] == "failed":
        return f"FAILED: {b['reason']}\n{'':14}log {b['log']}"
    return f"not attempted: {b['reason']}"


def render(r: dict) -> str:
    cuda, nvcc, cc = r["torch"]["cuda"], r["nvcc"], r["compiler"]
    kernels = " ".join(r["torch"]["arch_list"])
    torch_cuda = f"CUDA {cuda} (its kernels: {kernels})" if cuda else "no CUDA (a CPU-only build)"
    cpu = r["devices"]["cpu"]
    lines = [
        f"{PROG} {r['splatfield']['version']} ({r['splatfield']['path']})",
        f"{'python':14}{r['python']['version']} ({r['python']['executable']})",
        f"{'torch':14}{r['torch']['version']}, {torch_cuda}",
        f"{'compiler':14}" + (cc["version"] or f"{cc['command']} not found"),
        f"{'nvcc':14}" + (f"{nvcc['version']} ({nvcc['path']})" if nvcc["path"] else "not found"),
        f"{'extensions':14}cache {r['cache']}",
    ]
    for kind, b in r["extensions"].items():
        lines.append(f"  {kind:12}{_build_line(b)}")
    for group, ops in r.get("kernels", {}).items():
        lines.append(f"  {group:12}{' '.join(ops)}")
    arch = r["extensions"]["cuda"]["arch_list"]
    lines.append(f"  {'cuda arch':12}{' '.join(arch) if arch else 'none (no TORCH_CUDA_ARCH_LIST, no device)'}")
    lines.append(f"{'devices':14}cpu: {cpu['model']}, {cpu['logical_cores']} logical cores"
                 + (f" ({cpu['physical_cores']} physical)" if cpu.get("physical_cores") else ""))  # fmt: skip
    for g in r["devices"]["cuda"]:
        lines.append(f"  {'cuda:' + str(g['index']):12}{g['name']}, {g['memory_gib']} GiB, "
                     f"compute capability {g['compute_capability']}")  # fmt: skip
    if not r["devices"]["cuda"]:
        lines.append(f"  {'cuda':12}none seen by torch")
    t = r["threads"]
    lines.append(f"{'threads':14}torch {t['torch']} intra-op, {t['torch_interop']} inter-op; "
                 f"{t['logical_cores']} cores")  # fmt: skip
    deps = [f"{name} {d['version'] or 'MISSING'} ({d['for']})" for name, d in r["dependencies"].items()]
    lines.append(f"{'dependencies':14}" + "; ".join(deps))
    if r["settings"]:
        lines.append(f"{'environment':14}" + " ".join(f"{k}={v}" for k, v in r["settings"].items()))
    if r["problems"]:
        lines.append("problem: " + "; ".join(r["problems"]))
    else:
        lines.append(f"ok: --device {r['device']} runs the native kernels on {r['runs_on']}")
    return "\n".join(lines)


def run(cfg: Doctor) -> int:
    if cfg.json is not None:
        check_output_file(cfg.json)
    report = gather(cfg.device)
    print(render(report), flush=True)
    if cfg.json is not None:
        from splatfield.scenes.checkpoint import write_json_atomic

        write_json_atomic(cfg.json, report)
    return 1 if report["problems"] else 0
