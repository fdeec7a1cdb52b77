"""The viewer without a browser: camera conversion and validation, frames in each mode,
hostile client messages (through viser's own websocket protocol), two clients at once, a
training run with the viewer attached, and the "Model size" slider of a run with an elastic model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatfield.apps.viewer.frames import (
    MAX_SIDE, FrameSettings, ViewRequestError, colorize_depth, frame_size, pose_of, render_frame, view_camera,
)  # fmt: skip
from splatfield.render import Cameras, rasterize

from .viewer_clients import RawClient, client_at_view0, serving, wait_for

from .conftest import ctrl_c_works


def _cameras() -> Cameras:
    eyes = torch.tensor([[3.0, -2.0, 1.5], [-1.0, 4.0, 0.5]], dtype=torch.float64)
    return Cameras.look_at(eyes, torch.zeros_like(eyes), (0.0, 0.0, 1.0), 47.0, 320, 240)


def test_view_camera_round_trips_a_pose():
    cams = _cameras()
    for i in range(len(cams)):
        wxyz, pos = pose_of(cams, i)
        fov = 2 * math.atan(0.5 * cams.height / float(cams.fy[i]))
        back = view_camera(wxyz, pos, fov, cams.width, cams.height)
        torch.testing.assert_close(back.world_to_camera[0], cams.world_to_camera[i], atol=1e-9, rtol=0)
        torch.testing.assert_close(back.fy[0], cams.fy[i], atol=1e-9, rtol=0)
        assert (back.cx[0], back.cy[0]) == (cams.width / 2, cams.height / 2)


@pytest.mark.parametrize(
    "wxyz, pos, fov, match",
    [
        ((math.nan, 0, 0, 1), (0, 0, 0), 1.0, "not finite"),
        ((1, 0, 0, 0), (0, math.inf, 0), 1.0, "not finite"),
        ((0, 0, 0, 0), (0, 0, 0), 1.0, "quaternion is zero"),
        ((1, 0, 0, 0), (0, 0, 1e9), 1.0, "beyond"),
        ((1, 0, 0, 0), (0, 0, 0), 0.0, "field of view"),
        ((1, 0, 0, 0), (0, 0, 0), math.pi, "field of view"),
        ((1, 0, 0), (0, 0, 0), 1.0, "quaternion"),
    ],
)
def test_view_camera_rejects_bad_values(wxyz, pos, fov, match):
    with pytest.raises(ViewRequestError, match=match):
        view_camera(wxyz, pos, fov, 64, 64)


def test_frame_size_keeps_the_aspect_and_caps_the_size():
    assert frame_size(1600, 1200, 800) == (800, 600)
    assert frame_size(600, 800, 800) == (600, 800)
    assert frame_size(320, 240, 800) == (320, 240)  # never upscaled past the canvas
    assert max(frame_size(1e9, 1e9, 10**9)) == MAX_SIDE
    for bad in ((0, 100), (-5, 100), (math.nan, 100), (100, math.inf), (10_000, 1)):
        with pytest.raises(ViewRequestError):
            frame_size(*bad, 800)


def test_depth_colours_run_from_near_to_far():
    depth = np.array([[1.0, 2.0, 3.0, 0.0]], dtype=np.float32)
    alpha = np.array([[1.0, 1.0, 1.0, 0.0]], dtype=np.float32)
    rgb = colorize_depth(depth, alpha).astype(int)
    assert rgb[0, 3].tolist() == [0, 0, 0]  # nothing rendered
    near, far = rgb[0, 0], rgb[0, 2]
    assert near[0] + near[1] > 400 and near[2] < 80  # yellow
    assert far[2] > far[0] and far[0] + far[1] < 100  # dark blue
    assert colorize_depth(depth, np.zeros_like(alpha)).max() == 0


def test_frames_in_each_mode_match_the_renderer(native):
    from .scenes import SceneSpec, make_scene

    g, cam, _ = make_scene(SceneSpec(seed=3, n=300, width=320, height=240, sh_degree=1))
    out = rasterize(g, cam.to(dtype=torch.float32), background=(0.2, 0.3, 0.4))
    from splatfield.scenes.gaussian_scene import FixedGaussians

    rgb = render_frame(FixedGaussians(g), cam, FrameSettings(mode="rgb", sh_degree=1, background=(0.2, 0.3, 0.4)))
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    expect = (out.image[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.array_equal(rgb, expect)
    alpha = render_frame(FixedGaussians(g), cam, FrameSettings(mode="alpha", sh_degree=1))
    assert np.array_equal(alpha[..., 0], (out.alpha[0, ..., 0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
    depth = render_frame(FixedGaussians(g), cam, FrameSettings(mode="depth", sh_degree=1))
    assert not np.array_equal(depth, rgb) and depth[out.alpha[0, ..., 0].numpy() <= 0.05].max() == 0
    empty = render_frame(FixedGaussians(g.select(torch.zeros(0, dtype=torch.long))), cam, FrameSettings(background=(1.0, 1.0, 1.0)))
    assert empty.shape == (240, 320, 3) and empty.min() == 255


@pytest.fixture(scope="module")
def served(small_run, native):
    yield from serving(small_run)


def _good_pose(viewer):
    return pose_of(viewer.training_cameras, 0)


def test_hostile_messages_are_rejected_and_other_clients_keep_working(served):
    viewer, logs = served
    good, bad = RawClient(viewer.server.get_port()), RawClient(viewer.server.get_port())
    try:
        wxyz, pos = _good_pose(viewer)
        ids0 = set(viewer.client_ids())
        bad.camera(wxyz, pos)  # viser counts a client as connected from its first camera message
        good.camera(wxyz, pos)
        wait_for(lambda: len(set(viewer.client_ids()) - ids0) >= 2, 10, "two clients")
        rejected0 = viewer.stats.rejected
        bad.camera([math.nan, 0, 0, 1], [0, 0, 0])
        bad.camera([0, 0, 0, 0], pos)
        bad.camera(wxyz, [1e30, 0, 0])
        bad.camera(wxyz, pos, fov=-3.0)
        bad.camera(wxyz, pos, width=-10, height=5)
        bad.gui(viewer.controls["resolution"], 1e12)
        bad.gui(viewer.controls["resolution"], float("nan"))
        bad.gui(viewer.controls["sh_degree"], -7)
        bad.gui(viewer.controls["mode"], "x" * 10_000)
        bad.gui(viewer.controls["background"], [999, -1, 3])
        wait_for(lambda: viewer.stats.rejected >= rejected0 + 5, 10, "the bad requests to be rejected")
        assert viewer.settings.max_side <= MAX_SIDE and viewer.settings.mode in ("rgb", "depth", "alpha")
        assert 0 <= viewer.settings.sh_degree <= viewer.max_sh_degree
        assert all(0.0 <= c <= 1.0 for c in viewer.settings.background)
        # an enormous canvas is served, but capped
        good.camera(wxyz, pos, width=10**9, height=10**9)
        frames = wait_for(lambda: [f for c in viewer.client_ids() if (f := viewer.last_frame(c)) is not None
                                   and f[0].shape[0] == f[0].shape[1]], 15, "a frame for the good client")  # fmt: skip
        image, cam, _ = frames[0]
        assert max(image.shape[:2]) <= viewer.settings.max_side and image.std() > 1.0
        # garbage on the wire closes that connection only
        bad.send(b"\x00\xff not msgpack")
        wait_for(bad.closed.is_set, 10, "the server to drop the garbage client")
        before = viewer.stats.frames
        good.camera(wxyz, pos + 0.01, width=300, height=200)
        wait_for(lambda: viewer.stats.frames > before, 15, "the server to keep serving the good client")
        assert all("Traceback" not in line for line in logs)
        assert any("ignored a request" in line for line in logs)
    finally:
        good.close()
        bad.close()


def test_two_clients_get_their_own_views(served):
    viewer, _ = served
    a, b = RawClient(viewer.server.get_port()), RawClient(viewer.server.get_port())
    try:
        ids0 = set(viewer.client_ids())
        cams = viewer.training_cameras
        for client, i, size in ((a, 0, (320, 240)), (b, 3, (200, 300))):
            wxyz, pos = pose_of(cams, i)
            client.camera(wxyz, pos, fov=2 * math.atan(0.5 * cams.height / float(cams.fy[i])), width=size[0],
                          height=size[1])  # fmt: skip
        wait_for(lambda: len(set(viewer.client_ids()) - ids0) >= 2, 10, "two new clients")
        new = sorted(set(viewer.client_ids()) - ids0)
        shots = wait_for(lambda: [viewer.last_frame(c) for c in new] if all(
            (f := viewer.last_frame(c)) is not None and f[0].shape[1] in (320, 200) for c in new) else None, 15,
            "frames for both clients")  # fmt: skip
        sizes = sorted(tuple(img.shape[:2]) for img, _, _ in shots)
        assert sizes == [(240, 320), (300, 200)]
    finally:
        a.close()
        b.close()


class _Counted:
    """A scene whose renders are counted, with a preview counted apart."""

    def __init__(self, scene, counts: dict, name: str = "full") -> None:
        self.scene, self.counts, self.name = scene, counts, name
        self.kind, self.count_label, self.max_sh_degree = scene.kind, scene.count_label, scene.max_sh_degree

    def __len__(self) -> int:
        return len(self.scene)

    def render(self, cameras, **kw):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        return self.scene.render(cameras, **kw)

    def preview(self):
        return _Counted(self.scene, self.counts, "preview")


def test_moving_frames_are_drawn_from_the_preview_and_settled_ones_from_the_scene(served):
    viewer, _ = served
    counts: dict[str, int] = {}
    scene = _Counted(viewer.scene_snapshot(), counts)
    viewer._scene = lambda: scene
    client = RawClient(viewer.server.get_port())
    try:
        ids0 = set(viewer.client_ids())
        wxyz, pos = _good_pose(viewer)
        client.camera(wxyz, pos, width=400, height=400)
        wait_for(lambda: set(viewer.client_ids()) - ids0, 10, "the client")
        cid = sorted(set(viewer.client_ids()) - ids0)[0]
        # the first frame of a new camera is a moving one (reduced size), then the settled one
        wait_for(lambda: (f := viewer.last_frame(cid)) is not None and f[2], 15, "a settled frame")
        moving = viewer.settings.max_side * viewer.settings.moving_scale
        assert counts.get("preview", 0) >= 1 and counts.get("full", 0) >= 1, counts
        assert max(viewer.last_frame(cid)[0].shape[:2]) > moving
    finally:
        client.close()


def test_training_with_a_viewer_and_a_hostile_client_finishes_unchanged(tmp_path, native, monkeypatch):
    """The viewer only reads the scene: a run watched (and attacked) ends bit-identical, and
    the attack was rejected, one log line per kind of problem."""
    from splatfield.apps import training as tr
    from splatfield.apps.viewer import sessions
    from splatfield.data import procedural
    from splatfield.scenes.options import RunConfig, run_config

    data = procedural.write_demo_dataset(tmp_path / "data", size=24, train_views=6, test_views=2)

    def opts(name: str) -> RunConfig:
        return run_config(str(data), str(tmp_path / name), steps=60, init_points=800, init_half_size=1.0, sh_degree=1,
                          checkpoint_every=0, save_renders=False, eval=False)  # fmt: skip

    tr.train(opts("plain"), log=lambda m: None)
    viewers, clients, logged = [], [], []
    real_viewer = sessions.training_viewer

    def training_viewer(*args, **kwargs):
        viewer, panel = real_viewer(*args, **kwargs)
        viewers.append(viewer)
        return viewer, panel

    monkeypatch.setattr(sessions, "training_viewer", training_viewer)

    def log(message: str) -> None:
        logged.append(message)
        if message.startswith("viewer: http"):  # up: attack before the first step
            viewer = viewers[0]
            watcher, hostile = RawClient(viewer.server.get_port()), RawClient(viewer.server.get_port())
            clients.extend((watcher, hostile))
            watcher.camera([1, 0, 0, 0], [0.0, -4.0, 1.0], width=10**8, height=10**8)  # served, capped
            for _ in range(20):  # only bad cameras: whichever is current when frames are served is refused
                hostile.camera([1, 0, 0, 0], [0, 0, math.nan])
            hostile.gui(viewer.controls["resolution"], 1e12)
            hostile.gui(viewer.controls["sh_degree"], -7)
        elif "not finite" in message:  # the bad camera was refused (during a step): now garbage
            clients[1].send(b"garbage")

    def on_step(info) -> None:
        # before the first step's frames, wait until both clients are known and the bad settings
        # were refused (viser's threads), so that the step serves both: the watcher gets a frame
        # while training, the hostile camera is refused
        if info.step == 1:
            viewer = viewers[0]
            wait_for(lambda: len(viewer.client_ids()) == 2 and viewer.pending()
                     and viewer.stats.rejected >= 2, 30, "both clients and the bad settings")  # fmt: skip

    try:
        res = tr.train(opts("watched"), log=log, on_step=on_step, viewer=("127.0.0.1", 0))
    finally:
        for c in clients:
            c.close()
    assert res.finished and res.step == 60
    assert (tmp_path / "plain" / "scene.ply").read_bytes() == (tmp_path / "watched" / "scene.ply").read_bytes()
    assert not (tmp_path / "watched" / "renders").exists()  # the viewer added nothing unasked
    rejected = [m for m in logged if m.startswith("viewer: ignored a request")]
    for problem in ("camera pose or field of view is not finite", "resolution 1000000000000", "SH degree -7"):
        assert sum(problem in m for m in rejected) == 1, (problem, rejected)
    assert viewers[0].stats.rejected >= 3 and viewers[0].stats.frames >= 1
    assert all("Traceback" not in m for m in logged)


def test_view_command_serves_until_ctrl_c_and_reports_bad_input(small_run, tmp_path, native):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    cmd = [sys.executable, "-m", "splatfield.apps.cli", "view"]
    proc = subprocess.Popen(cmd + [str(small_run / "scene.ply"), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=ctrl_c_works)  # fmt: skip
    try:
        line = ""
        while "splatfield view:" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        # a bare splat file is served too: a client's camera gets a frame
        client = RawClient(int(url.rsplit(":", 1)[1]))
        client.camera([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -4.0], width=96, height=64)
        wait_for(lambda: client.received > 0, 30, "messages from the server")
        client.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
    for argv, message in (([str(tmp_path / "nothing.ply")], "nothing.ply: no such file or directory"),
                          ([str(small_run), "--port", "70000"], "--port: must be a port number")):  # fmt: skip
        done = subprocess.run(cmd + argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_camera_path_panel_saves_loads_and_renders_an_mp4(served, tmp_path):
    import contextlib
    from types import SimpleNamespace

    import imageio_ffmpeg

    from splatfield.scenes.run import numbered_output
    from splatfield.apps.viewer.paths import CameraPathPanel
    from splatfield.render import camera_paths

    viewer, _ = served
    panel = CameraPathPanel(viewer, lambda what, suffix: numbered_output(tmp_path, what, suffix), (64, 48))
    cams = viewer.training_cameras
    fov = 2 * math.atan(0.5 * cams.height / float(cams.fy[0]))
    camera = SimpleNamespace(wxyz=None, position=None, fov=fov)
    event = SimpleNamespace(client=SimpleNamespace(camera=camera, atomic=contextlib.nullcontext), client_id=0)
    for i in (0, 4, 8):
        camera.wxyz, camera.position = pose_of(cams, i)
        panel._add(event)
    camera.position = np.array([math.nan, 0.0, 0.0])
    panel._guard(panel._add)(event)  # refused, reported in the panel
    assert len(panel.keys) == 3 and "not finite" in panel.status.content
    panel.fps.value, panel.seconds.value = 10, 1.5
    path = panel.path()
    assert len(path) == 15 and (path.width, path.height) == (64, 48)
    torch.testing.assert_close(path.centers[0], cams.centers[0].to(torch.float64), atol=1e-6, rtol=0)
    panel.preview.value = 1.0
    panel._preview(event)  # moves the client's view to the path's last frame
    torch.testing.assert_close(torch.as_tensor(camera.position), path.centers[-1], atol=1e-6, rtol=0)

    saved = panel._save(event)
    keys, loop = camera_paths.read_keyframes(saved)
    assert len(keys) == 3 and loop is False
    torch.testing.assert_close(keys.centers, panel.keyframes().centers, atol=1e-6, rtol=0)
    panel._set_keys([])
    panel.file.value = str(saved)
    panel._load(event)
    assert len(panel.keys) == 3

    panel._render(event)
    mp4 = tmp_path / "viewer-path.mp4"
    wait_for(lambda: "wrote" in panel.status.content or "failed" in panel.status.content, 120, "the MP4")
    assert "wrote" in panel.status.content, panel.status.content
    reader = imageio_ffmpeg.read_frames(str(mp4))
    meta = next(reader)
    assert tuple(meta["size"]) == (64, 48) and sum(1 for _ in reader) == 15
    assert (tmp_path / "viewer-path.camera_path.json").is_file()


def test_bench_viewer_measures_frames_first_frame_and_slowdown(small_run, tmp_path, native):
    import json

    from splatfield.apps import cli

    out = tmp_path / "viewer.json"
    code = cli.run(["bench", "viewer", str(small_run), "--size", "96", "--frames", "3", "--blocks", "1",
                    "--block-steps", "3", "--json", str(out)])  # fmt: skip
    assert code == 0
    r = json.loads(out.read_text())
    assert r["gaussians"] > 0 and r["still_fps"] > 0 and r["moving_fps"] > 0
    assert r["moving_size"][0] <= 96
    assert (r["first_frame_seconds"] is None) == r["first_frame_note"].startswith("not measured")
    if r["first_frame_seconds"] is not None:
        assert 0 < r["url_seconds"] < r["first_frame_seconds"]
    assert len(r["train_block_ms_without"]) == len(r["train_block_ms_with"]) == 1
    assert r["train_step_ms_with"] > 0 and 0 <= r["train_viewer_share"] < 1
    assert not (small_run / "renders" / "viewer-path.mp4").exists()


def test_clicking_a_training_camera_moves_the_view_into_it(served):
    import contextlib
    from types import SimpleNamespace

    viewer, _ = served
    cams = viewer.training_cameras
    camera = SimpleNamespace(wxyz=None, position=None, fov=None)
    event = SimpleNamespace(client=SimpleNamespace(camera=camera, atomic=contextlib.nullcontext))
    viewer._jump_to(5)(event)
    back = view_camera(camera.wxyz, camera.position, camera.fov, cams.width, cams.height)
    torch.testing.assert_close(back.world_to_camera[0], cams.world_to_camera[5].to(torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(back.fy[0], cams.fy[5].to(torch.float64), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- elastic model size


@pytest.fixture(scope="module")
def served_elastic(small_elastic_run, native):
    yield from serving(small_elastic_run)


def _input_labels(viewer) -> list[str]:
    return [h.label for h in viewer.server.gui._gui_input_handle_from_uuid.values()]


def _kept(r: float, n: int) -> int:
    return math.ceil(round(r * n, 6))  # ceil(r N), without 0.05 * 3000 = 150.00000000000003


def test_model_size_slider_shows_the_elastic_scene_at_that_ratio(served_elastic, small_elastic_run):
    """Through viser's protocol: the slider's ratio r makes the viewer render the run's scene at r
    (ceil(r N) Gaussians, the same frame as SceneSource.at_ratio(r) gives), shows the count, and
    going back to a ratio seen before reuses its scene."""
    from splatfield.apps.sources import open_source

    viewer, logs = served_elastic
    src = open_source(small_elastic_run)
    assert src.elastic is not None
    n = len(src.scene)
    slider, count = viewer.controls["model_size"], viewer.controls["gaussian_count"]
    assert "Model size" in _input_labels(viewer) and slider.value == 1.0
    assert count.content.startswith(f"Gaussians: **{n:,}** of {n:,}") and len(viewer.scene_snapshot()) == n
    client, cid = client_at_view0(viewer, set(viewer.client_ids()))
    try:
        full = wait_for(lambda: (f := viewer.last_frame(cid)) is not None and f[2] and f, 30, "a settled frame")
        full_frame, camera = full[0], full[1]
        assert np.array_equal(full_frame, render_frame(src.scene, camera, viewer.settings))
        seen: dict[float, object] = {}
        frames: dict[float, np.ndarray] = {}
        for r in (0.25, 0.05, 0.6, 0.25, 1.0):
            client.gui(slider, r)
            k = _kept(r, n)
            expect = render_frame(src.at_ratio(r), camera, viewer.settings)
            wait_for(lambda: count.content.startswith(f"Gaussians: **{k:,}** of {n:,}"), 30, f"the count at r = {r}")
            wait_for(lambda: (f := viewer.last_frame(cid)) is not None and f[2] and np.array_equal(f[0], expect), 30,
                     f"the frame of the scene at r = {r}")  # fmt: skip
            scene = viewer.scene_snapshot()
            assert len(scene) == k
            if r in seen:  # back to a ratio shown before: the cached scene, not a new one
                assert scene is seen[r]
            seen[r], frames[r] = scene, expect
        assert (k := len(seen[0.05])) < len(seen[0.25]) < len(seen[0.6]) < n and k == _kept(0.05, n)
        assert np.abs(frames[0.05].astype(int) - full_frame.astype(int)).mean() > 1.0  # a visibly different frame
        assert not np.array_equal(frames[0.25], frames[0.6]) and np.array_equal(frames[1.0], full_frame)
        assert all("Traceback" not in line and "no scene at" not in line for line in logs)
    finally:
        client.close()


def test_model_size_slider_rejects_hostile_values(served_elastic):
    viewer, logs = served_elastic
    slider, count = viewer.controls["model_size"], viewer.controls["gaussian_count"]
    good, bad = None, None
    try:
        good, _ = client_at_view0(viewer, set(viewer.client_ids()))
        bad, _ = client_at_view0(viewer, set(viewer.client_ids()))
        n = int(count.content.rsplit(" of ", 1)[1].split()[0].replace(",", ""))
        good.gui(slider, 0.5)
        n_half = _kept(0.5, n)
        wait_for(lambda: len(viewer.scene_snapshot()) == n_half, 10, "the good value")
        for value in (0.0, -1.0, 1.5, 0.009, 1e308, float("nan"), float("inf"), float("-inf")):
            rejected0 = viewer.stats.rejected
            bad.gui(slider, value)
            wait_for(lambda: viewer.stats.rejected > rejected0, 10, f"model size {value} to be rejected")
            # put back for everyone (viser had already echoed the bad value to the other clients)
            wait_for(lambda: slider.value == 0.5, 10, "the slider to be put back")
            assert len(viewer.scene_snapshot()) == n_half
        assert sum("model size nan outside 0.01..1" in line for line in logs) == 1
        # the viewer keeps taking good values
        good.gui(slider, 0.3)
        wait_for(lambda: slider.value == 0.3 and len(viewer.scene_snapshot()) < n_half, 10, "a good value after")
        assert all("Traceback" not in line for line in logs)
    finally:
        for c in (good, bad):
            if c is not None:
                c.close()


def test_no_model_size_control_without_an_elastic_model(served, small_elastic_run, native):
    """A run trained without the elastic strategy, and any splat file (even one written by an
    elastic run), have no "Model size" slider and show their whole scene."""
    from splatfield.apps.viewer.sessions import open_view

    viewer, _ = served
    assert "model_size" not in viewer.controls and "Model size" not in _input_labels(viewer)
    assert "Resolution" in _input_labels(viewer)  # the labels are read where they are
    splat = open_view(small_elastic_run / "scene.ply", host="127.0.0.1", port=0, log=lambda m: None)
    try:
        assert "model_size" not in splat.controls and "Model size" not in _input_labels(splat)
    finally:
        splat.stop()


def test_model_size_cache_and_a_failing_ratio():
    """Without a server: the scene at a ratio is made once while cached (the newest CACHE_SIZE,
    at most twice the full scene's Gaussians), and a ratio whose scene cannot be made keeps the
    scene shown, with one log line."""
    from splatfield.apps.viewer.sizes import CACHE_SIZE, ModelSizePanel

    class Scene:
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

    made: list[float] = []

    def at_ratio(r: float) -> Scene:
        if r == 0.13:
            raise ValueError("the elastic model was trained on 10 Gaussians, this scene has 11")
        made.append(r)
        return Scene(math.ceil(r * 1000))

    logs: list[str] = []
    full = Scene(1000)
    panel = ModelSizePanel(at_ratio, full, log=logs.append)
    assert panel.scene() is full and made == []
    for r in (0.1, 0.2, 0.1, 0.3, 0.4, 0.1, 1.0, 0.1):
        panel.request(r)
        assert len(panel.scene()) == math.ceil(r * 1000) and panel.ratio == r
    assert made == [0.1, 0.2, 0.3, 0.4]  # 0.1 stayed cached (used again each time); 1.0 is the scene itself
    for r in (0.5, 0.6, 0.7):
        panel.request(r)
        panel.scene()
    assert len(panel._cache) <= CACHE_SIZE and sum(map(len, panel._cache.values())) <= 2 * len(full)
    assert list(panel._cache)[-1] == 0.7 and 0.2 not in panel._cache
    panel.request(0.13)
    for _ in range(3):
        assert panel.scene().n == 700 and panel.ratio == 0.7 and panel.requested == 0.7
    assert len(logs) == 1 and "no scene at model size 0.13" in logs[0] and "trained on 10" in logs[0]
