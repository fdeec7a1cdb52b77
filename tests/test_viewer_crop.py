"""The viewer's crop box, driven through viser's own protocol: the box moved, turned and sized
crops the scene shown; the export options it prints, parsed by the export command, keep the
same Gaussians (and the export writes them); "Export" writes the crop without overwriting;
hostile values are refused; a radiance field has no crop box."""

from __future__ import annotations

import math
import shlex

import numpy as np
import pytest
import torch

from splatfield.apps import cli
from splatfield.apps.viewer.frames import render_frame
from splatfield.scenes import formats
from splatfield.scenes.cleaning import cropped
from splatfield.scenes.crop import CropBox, CropRegion, tidy
from splatfield.scenes.gaussian_scene import FixedGaussians

from .viewer_clients import RawClient, client_at_view0, serving, wait_for


@pytest.fixture(scope="module")
def served(small_run, native):
    yield from serving(small_run)


@pytest.fixture(scope="module")
def served_elastic(small_elastic_run, native):
    yield from serving(small_elastic_run)


def _client(viewer, width: int = 96, height: int = 72) -> tuple[RawClient, int]:
    """A raw client looking from training view 0."""
    return client_at_view0(viewer, set(viewer.client_ids()), width, height)


def _move(client: RawClient, wxyz, position) -> None:
    """What a browser sends while the transform controls are dragged."""
    client.send({"type": "TransformControlsUpdateMessage", "name": "/crop", "wxyz": [float(v) for v in wxyz],
                 "position": [float(v) for v in position]})  # fmt: skip


def _quat(axis, angle):
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    return [math.cos(angle / 2), *(math.sin(angle / 2) * k).tolist()]


def _shown(viewer):
    return viewer.scene_snapshot().gaussians


def viewer_box(viewer) -> CropBox:
    """The box of the viewer's crop panel (read from its options text)."""
    return CropRegion.parse(viewer.controls["crop_options"].value).box


def _tidied(values) -> tuple:
    return tuple(tidy(v) for v in values)


def _fewer(viewer, n: int):
    """The Gaussians shown once they are fewer than ``n`` (else None)."""
    g = _shown(viewer)
    return g if len(g) < n else None


def test_crop_box_crops_the_view_and_its_printed_options_reproduce_the_crop(served, small_run, tmp_path):
    from splatfield.apps.sources import open_source

    viewer, logs = served
    c = viewer.controls
    labels = [h.label for h in viewer.server.gui._gui_input_handle_from_uuid.values()]
    assert {"Crop to box", "Centre", "Size", "Export options", "Export"} <= set(labels)
    src = open_source(small_run)
    g = src.scene.gaussians.detach()
    n = len(g)
    assert c["crop"].value is False and len(viewer.scene_snapshot()) == n  # off: the whole scene
    assert c["crop_options"].value.startswith(f"splatfield export {small_run} --crop-box ")
    client, cid = _client(viewer)
    try:
        client.gui(c["crop"], True)
        wait_for(lambda: len(viewer.scene_snapshot()) <= n and "Inside the box" in c["crop_status"].content, 10,
                 "the crop to be on")  # fmt: skip
        # move and turn the box with the transform controls, size it in the panel
        lo, hi = torch.quantile(g.means, 0.25, dim=0), torch.quantile(g.means, 0.75, dim=0)
        centre = ((lo + hi) / 2 + 0.0123456789).tolist()
        wxyz = _quat((0.3, -0.4, 1.0), 0.61)
        _move(client, wxyz, centre)
        wait_for(lambda: c["crop_centre"].value == _tidied(centre), 10, "the centre to follow")
        size = ((hi - lo) * 1.4).tolist()
        client.gui(c["crop_size"], size)
        want = CropBox(_tidied(centre), _tidied(size), _tidied(wxyz))

        def moved() -> str | None:
            t = c["crop_options"].value
            return t if "--crop-rotation" in t and CropRegion.parse(t).box == want else None

        text = wait_for(moved, 10, "the options of the moved box")
        shown = wait_for(lambda: _fewer(viewer, n), 10, "the cropped scene")
        # the printed command, parsed by the export command, keeps exactly the Gaussians shown
        argv = shlex.split(text)
        assert argv[:3] == ["splatfield", "export", str(small_run)]
        cmd = cli.parse(argv[1:])
        assert cmd.clean_options.region == CropRegion(box=want)
        expect = cropped(g, cmd.clean_options.region)
        assert 0 < len(expect) < n and torch.equal(shown.means, expect.means)
        assert torch.equal(shown.sh0, expect.sh0) and torch.equal(shown.opacity_logits, expect.opacity_logits)
        # ... and running it writes exactly them
        assert cli.run(argv[1:] + ["--format", "ply", "--out", str(tmp_path), "--views", "1"]) == 0
        written = formats.read_ply(tmp_path / "scene-crop.ply")
        assert torch.equal(written.means, shown.means) and torch.equal(written.log_scales, shown.log_scales)
        assert c["crop_status"].content.startswith(f"Inside the box: **{len(shown):,}** of {n:,} Gaussians")
        # the frame the browser gets is the cropped scene's
        frame = wait_for(lambda: (f := viewer.last_frame(cid)) is not None and f[2] and
                         np.array_equal(f[0], render_frame(FixedGaussians(expect), f[1], viewer.settings)) and f, 30,
                         "a frame of the cropped scene")  # fmt: skip
        assert not np.array_equal(frame[0], render_frame(src.scene, frame[1], viewer.settings))
        # "Export" writes the crop into the run's exports, never over a file
        exports = small_run / "exports"
        for name in ("scene-crop.spz", "scene-crop-1.spz"):
            client.gui(c["crop_export"], True)
            wait_for(lambda: (exports / name).is_file() and "Wrote" in c["crop_status"].content, 120, f"{name}")
            assert f"Wrote `{exports / name}` ({len(expect):,} of {n:,} Gaussians" in c["crop_status"].content
            back = formats.read_splats(exports / name)
            assert len(back) == len(expect)
            torch.testing.assert_close(back.means, expect.means, atol=2e-3, rtol=0)  # spz's fixed point
        # the typed centre moves the box too; off again shows the whole scene
        client.gui(c["crop_centre"], [1000.0, 1000.0, 1000.0])
        wait_for(lambda: len(viewer.scene_snapshot()) == 0, 10, "an empty crop")
        assert tuple(c["crop_transform"].position) == (1000.0,) * 3
        client.gui(c["crop"], False)
        wait_for(lambda: len(viewer.scene_snapshot()) == n, 10, "the whole scene again")
        client.gui(c["crop_export"], True)  # nothing to export while the crop is off
        wait_for(lambda: "Tick" in c["crop_status"].content, 10, "the hint")
        assert sorted(p.name for p in exports.glob("scene-crop*")) == ["scene-crop-1.spz", "scene-crop.spz"]
        assert all("Traceback" not in line and "failed" not in line for line in logs), logs
    finally:
        client.close()


def test_crop_box_refuses_hostile_values(served):
    viewer, logs = served
    c = viewer.controls
    client, _ = _client(viewer)
    try:
        client.gui(c["crop_size"], [0.5, 0.5, 0.5])
        client.gui(c["crop_centre"], [0.0, 0.0, 0.0])
        good = CropBox((0.0, 0.0, 0.0), (0.5, 0.5, 0.5), viewer_box(viewer).rotation)
        text = wait_for(lambda: (t := c["crop_options"].value) and CropRegion.parse(t).box == good and t, 10,
                        "the options of the good values")  # fmt: skip
        for handle, bad in ((c["crop_size"], [0.0, 1.0, 1.0]), (c["crop_size"], [-1.0, 1.0, 1.0]),
                            (c["crop_size"], [float("nan"), 1.0, 1.0]), (c["crop_size"], [1e300, 1.0, 1.0]),
                            (c["crop_centre"], [float("inf"), 0.0, 0.0]),
                            (c["crop_centre"], [1.0, 2.0])):  # fmt: skip
            rejected0 = viewer.stats.rejected
            client.gui(handle, bad)
            wait_for(lambda: viewer.stats.rejected > rejected0, 10, f"{bad!r} to be rejected")
            wait_for(lambda: c["crop_size"].value == (0.5, 0.5, 0.5) and c["crop_centre"].value == (0.0, 0.0, 0.0), 10,
                     "the panel to be put back")  # fmt: skip
            assert c["crop_options"].value == text
        for wxyz, pos in (([math.nan, 0, 0, 1], [0, 0, 0]), ([0, 0, 0, 0], [0, 0, 0]), ([1, 0, 0, 0], [1e30, 0, 0])):
            rejected0 = viewer.stats.rejected
            _move(client, wxyz, pos)
            wait_for(lambda: viewer.stats.rejected > rejected0, 10, f"the pose {wxyz} {pos} to be rejected")
            assert c["crop_options"].value == text
            # the controls are put back where the box is
            wait_for(lambda: tuple(c["crop_transform"].position) == (0.0, 0.0, 0.0) and
                     np.isfinite(c["crop_transform"].wxyz).all(), 10, "the controls to be put back")  # fmt: skip
        assert all("Traceback" not in line for line in logs)
    finally:
        client.close()


def test_printed_options_carry_the_model_size(served_elastic, small_elastic_run, tmp_path):
    """With an elastic model, the crop applies to the scene at the "Model size" ratio, and the
    printed command names that ratio: it reproduces the crop shown."""
    viewer, _ = served_elastic
    c = viewer.controls
    client, _ = _client(viewer)
    try:
        full = len(viewer.scene_snapshot())
        client.gui(c["model_size"], 0.5)
        wait_for(lambda: "--ratio 0.5 " in c["crop_options"].value and len(viewer.scene_snapshot()) < full, 10,
                 "the ratio in the options")  # fmt: skip
        half = _shown(viewer)
        lo, hi = torch.quantile(half.means, 0.2, dim=0), torch.quantile(half.means, 0.8, dim=0)
        client.gui(c["crop_centre"], ((lo + hi) / 2).tolist())
        client.gui(c["crop_size"], (hi - lo).tolist())
        client.gui(c["crop"], True)
        shown = wait_for(lambda: _fewer(viewer, len(half)), 10, "the crop")
        argv = shlex.split(c["crop_options"].value)[1:]
        assert "--ratio" in argv
        assert cli.run(argv + ["--format", "ply", "--out", str(tmp_path), "--views", "1"]) == 0
        written = formats.read_ply(tmp_path / "scene-r0.5-crop.ply")
        assert len(written) == len(shown) and torch.equal(written.means, shown.means)
    finally:
        client.close()


def test_no_crop_box_for_a_radiance_field(small_field_run, native):
    from splatfield.apps.viewer.sessions import open_view

    viewer = open_view(small_field_run, host="127.0.0.1", port=0, log=lambda m: None)
    try:
        labels = [h.label for h in viewer.server.gui._gui_input_handle_from_uuid.values()]
        assert "crop" not in viewer.controls and "Crop to box" not in labels and "Resolution" in labels
        assert "crop_transform" not in viewer.controls
    finally:
        viewer.stop()
