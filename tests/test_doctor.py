"""`splatfield doctor`, the two native extensions failing on purpose, and the suite failing
when it should (SPLATFIELD_REQUIRE_NATIVE, SPLATFIELD_REQUIRE_DATA).

The failures are forced with render/_ext.py's test modes: SPLATFIELD_CUDA_BUILD=compile-only
(the CUDA build runs as nvcc -c even with a CPU torch) and SPLATFIELD_PLANT_BAD_SOURCE (a
source with a syntax error joins that build, first, so it fails within seconds). Each runs
in a subprocess, since a process builds and loads its extensions once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splatfield.apps import cli
from splatfield.render import _ext, rasterize

from .conftest import require_shared
from .test_fallback import _scene

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("splatfield ", "python", "torch", "compiler", "nvcc", "extensions", "  cpu", "  cuda", "devices",
            "threads", "dependencies")  # fmt: skip


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_doctor_prints_every_section_and_exits_0_here(native, tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert cli.run(["doctor", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for section in SECTIONS:
        assert any(line.startswith(section) for line in lines), (section, lines)
    assert lines[-1].startswith("ok: --device auto runs the native kernels")
    cpu = next(line for line in lines if line.startswith("  cpu"))
    assert f"built, {_ext.build_status()['cpu']['cache_dir']}" in cpu
    report = json.loads(out.read_text())
    assert report["extensions"]["cpu"]["state"] == "built" and report["problems"] == []
    assert report["torch"]["version"] == torch.__version__ and report["threads"]["logical_cores"] == os.cpu_count()
    if not torch.cuda.is_available():  # asking for CUDA where there is none: exit 1, the problem last
        assert cli.run(["doctor", "--device", "cuda"]) == 1
        assert capsys.readouterr().out.splitlines()[-1].startswith("problem: --device cuda: torch")


RENDER_SCRIPT = """
import json, sys, warnings
import torch
from splatfield.render import _ext, rasterize
from splatfield.render.rasterize import resolve_backend
from tests.test_fallback import _scene

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _ext.load()
    g, cams = _scene()
    backend = resolve_backend("auto", torch.device("cpu"))
    torch.save(rasterize(g, cams).image, sys.argv[1])
print(json.dumps({"backend": backend, "status": _ext.build_status(), "warnings": [str(w.message) for w in caught]}))
"""


def test_a_failed_cuda_build_leaves_the_cpu_kernels_native_and_doctor_names_it(native, tmp_path):
    # the CPU build of the normal cache is reused: the CUDA build is keyed on its own
    env = _env(SPLATFIELD_CUDA_BUILD="compile-only", SPLATFIELD_PLANT_BAD_SOURCE="cuda")
    if _ext.find_nvcc() is None:
        pytest.skip("nvcc not found: the CUDA build is not attempted")  # the cause is then "nvcc not found"
    proc = _run(["-c", RENDER_SCRIPT, str(tmp_path / "image.pt")], env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    cpu, cuda = result["status"]["cpu"], result["status"]["cuda"]
    assert cpu["state"] == "built" and result["backend"] == "native"
    g, cams = _scene()
    assert torch.equal(torch.load(tmp_path / "image.pt"), rasterize(g, cams, backend="native").image)
    assert cuda["state"] == "failed" and "planted_syntax_error.cu" in cuda["reason"] and "error" in cuda["reason"]
    log = Path(cuda["log"])
    assert log.parent == Path(cuda["cache_dir"]) and "planted_syntax_error.cu" in log.read_text()
    # said once, in one line, with the log
    [warning] = [w for w in result["warnings"] if "CUDA" in w]
    assert "\n" not in warning and cuda["reason"] in warning and str(log) in warning

    doctor = _run(["-m", "splatfield.apps.cli", "doctor"], env)
    # --device auto runs on the CPU without a GPU, which works; with one, on CUDA, which does not
    assert doctor.returncode == int(torch.cuda.is_available()), doctor.stdout + doctor.stderr
    assert f"FAILED: {cuda['reason']}" in doctor.stdout and f"log {log}" in doctor.stdout
    asked = _run(["-m", "splatfield.apps.cli", "doctor", "--device", "cuda"], env)
    assert asked.returncode == 1 and asked.stdout.splitlines()[-1].startswith("problem: --device cuda")


def test_a_failed_cpu_build_fails_the_suite_under_require_native(tmp_path):
    # a fresh cache, and one ninja job: the planted file is compiled first, so the build
    # fails in a second instead of compiling the real sources
    env = _env(SPLATFIELD_PLANT_BAD_SOURCE="cpu", SPLATFIELD_CACHE=str(tmp_path / "cache"), MAX_JOBS="1",
               SPLATFIELD_REQUIRE_NATIVE="1")  # fmt: skip
    test = "tests/test_fallback.py::test_cuda_tensors_fall_back_naming_the_cuda_cause[no-nvcc]"  # uses `native`
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    required = _run(pytest_args, env)
    assert required.returncode != 0, required.stdout
    assert "planted_syntax_error.cpp" in required.stdout and "1 error" in required.stdout, required.stdout
    skipped = _run(pytest_args, _env(**{**env, "SPLATFIELD_REQUIRE_NATIVE": None}))
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "planted_syntax_error.cpp" in skipped.stdout  # the skip names the cause too

    doctor = _run(["-m", "splatfield.apps.cli", "doctor"], env)
    assert doctor.returncode == 1
    assert doctor.stdout.splitlines()[-1].startswith("problem: the CPU extension failed to build: RuntimeError: ")
    assert "planted_syntax_error.cpp" in doctor.stdout.splitlines()[-1]


def test_missing_shared_data_skips_here_and_fails_under_require_data(monkeypatch, tmp_path):
    monkeypatch.delenv("SPLATFIELD_REQUIRE_DATA", raising=False)
    require_shared(tmp_path)  # present: nothing happens
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_shared(tmp_path / "missing")
    monkeypatch.setenv("SPLATFIELD_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="SPLATFIELD_REQUIRE_DATA=1"):
        require_shared(tmp_path / "missing")
