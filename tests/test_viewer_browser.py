"""The viewer in a real browser: Debian's chromium driven by playwright (software WebGL).

What the page shows is compared with what the server rendered for the camera the page
reported; the camera is moved with the mouse, the render mode switched in the panel, a live
training run is watched (its Gaussian count changes, pause holds the step count), and an
elastic run's "Model size" slider is dragged (the count and the image follow)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from .viewer_clients import browser_page, chromium_path, wait_for

from .conftest import ctrl_c_works

pytestmark = pytest.mark.timeout(600)

MIN_PSNR_DB = 30.0  # page vs server-side render, after JPEG transport and the browser's resampling


def _screenshot(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# The part of an 800x600 page the scene has to itself: left of the control panel, below the
# software-WebGL notice (top left) and above the axes gizmo (bottom left).
CROP = (slice(170, 540), slice(90, 450))


def _settled_frame(viewer, client_id: int, shape: tuple, timeout: float = 60.0):
    """The full-size frame of a camera that has stopped moving, once the page has it, scaled
    to the page's size (the browser lowers its canvas resolution when WebGL is slow; the
    frame then fills the page at that resolution)."""
    def full() -> tuple | None:
        got = viewer.last_frame(client_id)
        return got if got is not None and got[2] and not viewer.pending() else None

    wait_for(full, timeout, "a full-size frame")
    time.sleep(1.5)  # the JPEG's trip to the page and a repaint
    image, camera, _ = viewer.last_frame(client_id)
    if image.shape[:2] != shape[:2]:
        image = np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return image, camera


def _served(run):
    """`splatfield view RUN` in this process, without the training cameras (the comparison is
    of the scene alone)."""
    chromium_path()
    from splatfield.apps.viewer.sessions import open_view

    v = open_view(run, host="127.0.0.1", port=0, log=lambda m: None)
    v.show_training_cameras(False)
    yield v
    v.stop()


@pytest.fixture(scope="module")
def viewer(small_run, native):
    yield from _served(small_run)


def _first_frame_on_page(viewer, page, ids0: set):
    """The page's first settled frame: the same as the server renders again for its camera,
    and on the page within MIN_PSNR_DB. Returns (client id, screenshot, frame, camera)."""
    cid = wait_for(lambda: sorted(set(viewer.client_ids()) - ids0), 60, "the page to connect")[0]
    shot = _screenshot(page)
    frame, camera = _settled_frame(viewer, cid, shot.shape)
    shot = _screenshot(page)
    # the server-side render of that camera, made again here, is what was sent
    from splatfield.apps.viewer.frames import render_frame

    again = render_frame(viewer.scene_snapshot(), camera, viewer.settings)
    assert np.array_equal(again, viewer.last_frame(cid)[0])
    psnr = _psnr(shot[CROP], frame[CROP])
    print(f"page vs server render: {psnr:.2f} dB")
    assert psnr >= MIN_PSNR_DB, f"page vs server render: {psnr:.2f} dB"
    assert frame[CROP].std() > 5.0  # the crop holds the scene, not a blank
    return cid, shot, frame, camera


def test_page_shows_the_server_render_follows_the_mouse_and_switches_to_depth(viewer):
    ids0 = set(viewer.client_ids())
    with browser_page(viewer.url, 800, 600) as page:
        cid, shot, _, camera = _first_frame_on_page(viewer, page, ids0)

        # drag the camera: the server renders a new view and the page shows it
        page.mouse.move(300, 350)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(300 + 12 * k, 350 + 3 * k)
            time.sleep(0.03)
        page.mouse.up()
        moved, moved_camera = _settled_frame(viewer, cid, shot.shape)
        assert not np.allclose(moved_camera.world_to_camera, camera.world_to_camera)
        shot2 = _screenshot(page)
        assert np.abs(shot2[CROP].astype(int) - shot[CROP].astype(int)).mean() > 2.0
        psnr2 = _psnr(shot2[CROP], moved[CROP])
        print(f"after the drag: {psnr2:.2f} dB")
        assert psnr2 >= MIN_PSNR_DB

        # depth mode from the panel
        page.get_by_label("Render mode").click()
        page.get_by_role("option", name="depth").click()
        wait_for(lambda: viewer.settings.mode == "depth", 20, "the depth mode to reach the server")
        depth, _ = _settled_frame(viewer, cid, shot.shape)
        shot3 = _screenshot(page)
        psnr3 = _psnr(shot3[CROP], depth[CROP])
        print(f"depth mode: {psnr3:.2f} dB")
        assert psnr3 >= MIN_PSNR_DB
        assert np.abs(depth[CROP].astype(int) - moved[CROP].astype(int)).mean() > 10.0


@pytest.fixture(scope="module")
def field_viewer(small_field_run, native):
    yield from _served(small_field_run)


def test_page_shows_a_field_run(field_viewer):
    """A radiance-field run: the page shows what the server rendered, in RGB and depth."""
    viewer = field_viewer
    ids0 = set(viewer.client_ids())
    assert viewer.scene_snapshot().kind == "field"
    with browser_page(viewer.url, 800, 600) as page:
        cid, shot, frame, _ = _first_frame_on_page(viewer, page, ids0)
        page.get_by_label("Render mode").click()
        page.get_by_role("option", name="depth").click()
        wait_for(lambda: viewer.settings.mode == "depth", 20, "the depth mode to reach the server")
        depth, _ = _settled_frame(viewer, cid, shot.shape)
        shot3 = _screenshot(page)
        assert _psnr(shot3[CROP], depth[CROP]) >= MIN_PSNR_DB
        assert np.abs(depth[CROP].astype(int) - frame[CROP].astype(int)).mean() > 10.0


def _gaussians_on_page(page) -> tuple[int, int] | None:
    text = page.inner_text("body")
    step = re.search(r"step\s+([\d,]+)\s*/", text)
    count = re.search(r"Gaussians\s+([\d,]+)", text)
    if step is None or count is None:
        return None
    return int(step.group(1).replace(",", "")), int(count.group(1).replace(",", ""))


def test_page_watches_a_live_training(tmp_path, native):
    chromium_path()
    from splatfield.data import procedural

    data = procedural.write_demo_dataset(tmp_path / "data", size=32, train_views=8, test_views=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "splatfield.apps.cli", "train", str(data), "--out", str(tmp_path / "run"), "--steps",
         "100000", "--init-points", "2000", "--init-half-size", "1.0", "--sh-degree", "0", "--checkpoint-every", "0",
         "--viewer-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=ctrl_c_works,
    )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "training ended before its viewer started"
            if line.startswith("viewer: "):
                url = line.split()[1]
        assert url is not None
        with browser_page(url, 800, 600) as page:
            first = wait_for(lambda: _gaussians_on_page(page), 60, "the training figures on the page")
            # density control (from step 500) changes the count the page shows
            changed = wait_for(lambda: (g := _gaussians_on_page(page)) and g[1] != first[1] and g, 240,
                               "the Gaussian count to change")  # fmt: skip
            assert changed[0] > first[0]
            page.get_by_role("button", name="Pause").click()
            wait_for(lambda: "paused" in page.inner_text("body"), 20, "the page to say paused")
            held = _gaussians_on_page(page)
            time.sleep(2.0)
            assert _gaussians_on_page(page)[0] == held[0]  # no steps while paused
            page.get_by_role("button", name="Resume").click()
            wait_for(lambda: _gaussians_on_page(page)[0] > held[0], 30, "training to resume")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 130, out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def elastic_viewer(small_elastic_run, native):
    yield from _served(small_elastic_run)


def _count_on_page(page) -> tuple[int, int] | None:
    """(Gaussians shown, of how many) from the "Model size" panel's text."""
    found = re.search(r"Gaussians:\s*([\d,]+)\s+of\s+([\d,]+)", page.inner_text("body"))
    return None if found is None else (int(found.group(1).replace(",", "")), int(found.group(2).replace(",", "")))


def test_page_model_size_slider_changes_the_count_and_the_image(elastic_viewer):
    """A run with an elastic model: dragging the "Model size" slider in the page to about a
    twentieth makes the page show ceil(r N) Gaussians and the (different) image of the scene at r."""
    import math

    viewer = elastic_viewer
    n = len(viewer.scene_snapshot())
    ids0 = set(viewer.client_ids())
    with browser_page(viewer.url, 800, 600) as page:
        cid, shot, frame, camera = _first_frame_on_page(viewer, page, ids0)
        assert wait_for(lambda: _count_on_page(page), 20, "the Gaussian count on the page") == (n, n)
        # the slider of the row labelled "Model size" (Mantine's thumb has no name of its own)
        row = page.get_by_text("Model size", exact=True).locator("xpath=ancestor::div[.//*[@role='slider']][1]")
        thumb = row.get_by_role("slider")
        assert thumb.get_attribute("aria-valuenow") == "1"
        track = thumb.locator("xpath=..").bounding_box()
        box = thumb.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        for k in range(1, 11):  # drag it to about a twentieth of the track
            page.mouse.move(box["x"] + box["width"] / 2 - k * 0.095 * track["width"], box["y"] + box["height"] / 2)
            time.sleep(0.03)
        page.mouse.up()
        slider = viewer.controls["model_size"]
        # the page and the server agree on the drag's last value
        wait_for(lambda: slider.value < 0.2 and float(thumb.get_attribute("aria-valuenow")) == slider.value, 20,
                 "the slider's value to reach the server")  # fmt: skip
        r = slider.value
        k = math.ceil(round(r * n, 6))
        print(f"model size {r}: {k} of {n} Gaussians")
        assert 0.01 <= r < 0.2 and k < n
        wait_for(lambda: _count_on_page(page) == (k, n), 30, f"the page to show {k:,} of {n:,} Gaussians")
        assert len(viewer.scene_snapshot()) == k
        reduced, reduced_camera = _settled_frame(viewer, cid, shot.shape)
        assert np.allclose(reduced_camera.world_to_camera, camera.world_to_camera)  # the view did not move
        from splatfield.apps.viewer.frames import render_frame

        assert np.array_equal(viewer.last_frame(cid)[0], render_frame(viewer.scene_snapshot(), camera, viewer.settings))
        shot2 = _screenshot(page)
        psnr = _psnr(shot2[CROP], reduced[CROP])
        change = np.abs(shot2[CROP].astype(int) - shot[CROP].astype(int)).mean()
        print(f"model size {r}: page vs server render {psnr:.2f} dB; page changed by {change:.2f} levels")
        assert psnr >= MIN_PSNR_DB
        assert change > 2.0
