"""Shared fixtures: the native extension (built once per machine, cached) and paths.

A test must be able to fail: what a test needs and the machine lacks is a skip on a
developer's machine, but a failure where ``SPLATFIELD_REQUIRE_NATIVE=1`` (the native CPU
kernels) or ``SPLATFIELD_REQUIRE_DATA=1`` (the ``../shared`` data) is set, as ``.ci/run``
does, so that CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def skip_unless_required(message: str, variable: str) -> None:
    """Skips with ``message``, or fails with it when the environment ``variable`` is set (and not 0)."""
    if os.environ.get(variable, "") not in ("", "0"):
        pytest.fail(f"{message} ({variable}={os.environ[variable]})", pytrace=False)
    pytest.skip(message)


def require_shared(path: Path) -> None:
    """Shared test data at ``path``: a skip where it is missing, a failure under SPLATFIELD_REQUIRE_DATA."""
    if not path.exists():
        skip_unless_required(f"shared test data not found at {path}", "SPLATFIELD_REQUIRE_DATA")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "shared_data(path): needs ../shared data at path (see require_shared)")


@pytest.hookimpl(tryfirst=True)  # before the fixtures, which may read the data
def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("shared_data"):
        require_shared(mark.args[0])


@pytest.fixture(scope="session")
def native() -> None:
    """The native CPU kernels: a skip where they cannot be built (the reason is printed), a
    failure under SPLATFIELD_REQUIRE_NATIVE."""
    from splatfield.render import _ext

    if not _ext.native_available():
        skip_unless_required(f"native rasterizer unavailable: {_ext.native_error()}", "SPLATFIELD_REQUIRE_NATIVE")


@pytest.fixture(scope="session")
def _trained_small_run(tmp_path_factory) -> Path:
    """A short training on a 32x32 procedural dataset (12 train, 3 test views), made once."""
    from splatfield.apps import training
    from splatfield.data import procedural
    from splatfield.scenes.options import run_config

    root = tmp_path_factory.mktemp("small_run")
    data = procedural.write_demo_dataset(root / "data", size=32, train_views=12, test_views=3)
    config = run_config(str(data), str(root / "run"), steps=120, init_points=3000, init_half_size=1.0, sh_degree=1,
                        checkpoint_every=0, save_renders=False)  # fmt: skip
    training.train(config, log=lambda m: None)
    return root / "run"


@pytest.fixture(scope="session")
def _trained_small_field_run(tmp_path_factory) -> Path:
    """A radiance field trained briefly on a 48x48 procedural dataset, made once."""
    from splatfield.apps import training
    from splatfield.data import procedural
    from splatfield.scenes.options import run_config

    root = tmp_path_factory.mktemp("small_field_run")
    data = procedural.write_demo_dataset(root / "data", size=48, train_views=16, test_views=3)
    config = run_config(str(data), str(root / "run"), scene_kind="field", steps=150, checkpoint_every=0,
                        save_renders=False, field_resolution=48, field_grow_at=(40, 90), field_box_half_size=1.25,
                        field_rays=2048)  # fmt: skip
    training.train(config, log=lambda m: None)
    return root / "run"


@pytest.fixture(scope="session")
def _trained_small_elastic_run(tmp_path_factory) -> Path:
    """The small run's data trained with adc and the elastic phase (steps 84-120), made once."""
    from splatfield.apps import training
    from splatfield.data import procedural
    from splatfield.scenes.options import run_config

    root = tmp_path_factory.mktemp("small_elastic_run")
    data = procedural.write_demo_dataset(root / "data", size=32, train_views=12, test_views=3)
    config = run_config(str(data), str(root / "run"), strategy=("adc", "elastic"), steps=120, init_points=3000,
                        init_half_size=1.0, sh_degree=1, checkpoint_every=0, save_renders=False)  # fmt: skip
    training.train(config, log=lambda m: None)
    return root / "run"


@pytest.fixture(scope="module")
def small_elastic_run(_trained_small_elastic_run, tmp_path_factory) -> Path:
    """A copy of the small elastic run for one test module."""
    copy = tmp_path_factory.mktemp("elastic_run_copy") / "run"
    shutil.copytree(_trained_small_elastic_run, copy)
    return copy


@pytest.fixture(scope="module")
def small_field_run(_trained_small_field_run, tmp_path_factory) -> Path:
    """A copy of the small field run for one test module."""
    copy = tmp_path_factory.mktemp("field_run_copy") / "run"
    shutil.copytree(_trained_small_field_run, copy)
    return copy


@pytest.fixture(scope="module")
def small_run(_trained_small_run, tmp_path_factory) -> Path:
    """A copy of the small run for one test module (tests add outputs to it)."""
    copy = tmp_path_factory.mktemp("run_copy") / "run"
    shutil.copytree(_trained_small_run, copy)
    return copy


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Tests run with the machine's threads, like users; pin torch's intra-op pool size so
    # results do not depend on what an earlier test set.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def ctrl_c_works() -> None:
    """preexec_fn for a child the tests stop with SIGINT: the default disposition, whatever
    the test run inherited (a shell's background job starts with SIGINT ignored, and Python
    then never raises KeyboardInterrupt)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
