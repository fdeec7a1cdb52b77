"""Test clients for the viewer: a real Chromium through playwright, and (re-exported) the raw
websocket client of :mod:`splatfield.apps.viewer.protocol` that sends what a browser would and
what a hostile one might."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest

from splatfield.apps.viewer.protocol import CHROMIUM_ARGS, RawClient, find_chromium  # noqa: F401  (RawClient re-exported)


def chromium_path() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it when run as root)")
    return found


@contextmanager
def browser_page(url: str, width: int = 800, height: int = 600) -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.goto(url)
            yield page
        finally:
            browser.close()


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def serving(run):
    """A viewer of ``run`` on a free port and its log, stopped when the fixture ends (use with
    ``yield from`` in a fixture)."""
    from splatfield.apps.viewer.sessions import open_view

    logs: list[str] = []
    viewer = open_view(run, host="127.0.0.1", port=0, log=logs.append)
    yield viewer, logs
    viewer.stop()


def client_at_view0(viewer, ids0: set, width: int = 160, height: int = 120) -> tuple[RawClient, int]:
    """A raw client looking from training view 0 (its first frame on its way), and its id
    (the one not in ``ids0``, the viewer's clients before)."""
    import math

    from splatfield.apps.viewer.frames import pose_of

    client = RawClient(viewer.server.get_port())
    cams = viewer.training_cameras
    wxyz, pos = pose_of(cams, 0)
    client.camera(wxyz, pos, fov=2 * math.atan(0.5 * cams.height / float(cams.fy[0])), width=width, height=height)
    cid = wait_for(lambda: sorted(set(viewer.client_ids()) - ids0), 10, "the client")[0]
    return client, cid
