"""Blurred frames: the sharpness score, the rules that drop blurred training frames, the
transforms.json ``sharpness`` field, the SfM report and the options' errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from splatfield.data import DatasetError, load, procedural
from splatfield.data import sharpness as S
from splatfield.data.sfm_inputs import prepare_images
from splatfield.scenes.config import ConfigError, from_dict
from splatfield.scenes.options import DataConfig, RunConfig, run_config

from .test_sfm import fox_subset, needs_fox


SIZE_TOLERANCE = 0.15  # the score of one picture at 1/1 .. 1/3 of its size (box or Lanczos resampling)
BLURRED = 3  # the training frame the tests blur
LINE = re.compile(r"^blurred frames: dropped 1 of 8 training frames with sharpness below .* r_3\.png \(")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatfield.apps.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *, code: int, starts: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip("\n").splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


def picture(w: int = 1600, h: int = 1200, seed: int = 0) -> Image.Image:
    """A sharp synthetic photo: coloured shapes drawn at twice the size, reduced (anti-aliased edges)."""
    rng = np.random.default_rng(seed)
    big = Image.new("RGB", (2 * w, 2 * h), (120, 110, 100))
    draw = ImageDraw.Draw(big)
    for _ in range(250):
        x, y, r = rng.uniform(0, 2 * w), rng.uniform(0, 2 * h), rng.uniform(10, 160)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = [x - r, y - r * rng.uniform(0.3, 1.0), x + r, y + r]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return big.resize((w, h), Image.Resampling.BOX)


# ----------------------------------------------------------------------------- the score


def test_sharp_scores_above_blurred():
    im = picture()
    sharp = S.sharpness(im)
    scores = [S.sharpness(im.filter(ImageFilter.GaussianBlur(r))) for r in (1, 2, 4)]
    assert sharp > scores[0] > scores[1] > scores[2] > 0
    assert scores[1] < 0.4 * sharp  # a 2 px blur at 1600 px is plain to see
    assert S.sharpness(np.asarray(im)) == pytest.approx(sharp)  # an array scores as the image


@pytest.mark.parametrize("factor", [1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("resample", [Image.Resampling.BOX, Image.Resampling.LANCZOS])
def test_score_does_not_depend_on_the_image_size(factor, resample):
    im = picture()
    small = im.resize((round(im.width / factor), round(im.height / factor)), resample)
    assert S.sharpness(small) == pytest.approx(S.sharpness(im), rel=SIZE_TOLERANCE)
    if factor >= 2:  # while the plain variance of the Laplacian at the image's own size grows
        own = S.laplacian_variance(np.asarray(small.convert("L"), dtype=np.float32))
        full = S.laplacian_variance(np.asarray(im.convert("L"), dtype=np.float32))
        assert own > 1.5 * full


def test_jpeg_file_scores_as_its_pixels(tmp_path):
    im = picture()
    im.save(tmp_path / "a.jpg", quality=95)
    with Image.open(tmp_path / "a.jpg") as decoded:
        decoded.load()
        full = S.sharpness(decoded)
    assert S.file_sharpness(tmp_path / "a.jpg") == pytest.approx(full, rel=0.1)  # decoded at a reduced DCT scale
    assert S.scores([tmp_path / "a.jpg"] * 3, threads=2) == [S.file_sharpness(tmp_path / "a.jpg")] * 3


def test_rules():
    values = [100.0, 90.0, 110.0, 20.0, 60.0]  # median 90
    assert S.blurred(values) == []
    assert S.blurred(values, min_relative_sharpness=0.5) == [3]
    assert S.blurred(values, min_sharpness=70) == [3, 4]
    assert S.blurred(values, min_sharpness=10, min_relative_sharpness=0.7) == [3, 4]  # either rule
    names = [f"f{i}.jpg" for i in range(len(values))]
    assert S.named(names, values, [4, 3]) == "f3.jpg (20), f4.jpg (60)"  # the blurriest first
    lines: list[str] = []
    assert S.report_blurred(names, values, lines.append) == [3]
    assert lines == ["sharpness: 1 of 5 images look blurred (below 0.5 x the median 90): f3.jpg (20); train with "
                     "--min-relative-sharpness 0.5 to leave them out"]  # fmt: skip
    assert S.report_blurred(names, [100.0] * 5, lines.append) == [] and len(lines) == 1  # nothing to say


# ----------------------------------------------------------------------------- datasets


@pytest.fixture
def blurred_dataset(tmp_path) -> Path:
    """The procedural Blender dataset (8 train, 2 test views) with train/r_3.png blurred."""
    data = procedural.write_demo_dataset(tmp_path / "data", size=64, train_views=8, test_views=2)
    frame = data / "train" / f"r_{BLURRED}.png"
    with Image.open(frame) as im:
        blurred = im.filter(ImageFilter.GaussianBlur(2))
    blurred.save(frame)
    return data


def train_names(dataset) -> list[str]:
    return [p.name for p in dataset.train.image_paths]


def test_blurred_frame_is_dropped_from_training_and_said(blurred_dataset):
    lines: list[str] = []
    kept = load(blurred_dataset, log=lines.append)
    assert len(kept.train) == 8 and lines == []  # no option: nothing dropped, nothing scored

    ds = load(blurred_dataset, min_relative_sharpness=0.3, log=lines.append)
    assert train_names(ds) == [f"r_{i}.png" for i in range(8) if i != BLURRED]
    assert len(ds.train.cameras) == len(ds.train.source_cameras) == 7 and len(ds.test) == 2  # test views kept
    assert ds.train.cameras.fx.shape == (7,)
    assert ds.train.image(BLURRED).shape == (64, 64, 3)  # r_4 now: images and cameras still pair up
    assert ds.train.image_paths[BLURRED].name == "r_4.png"
    assert len(lines) == 1 and LINE.match(lines[0]), lines
    assert "x the median" in lines[0] and "variance of the Laplacian at 512 px" in lines[0]

    # the same with the absolute rule, at a floor between the blurred frame's score and the others'
    scores = S.scores(sorted((blurred_dataset / "train").glob("r_*.png"), key=lambda p: int(p.stem[2:])))
    floor = (scores[BLURRED] + min(s for i, s in enumerate(scores) if i != BLURRED)) / 2
    lines.clear()
    ds = load(blurred_dataset, min_sharpness=floor, log=lines.append)
    assert BLURRED not in [int(n[2:-4]) for n in train_names(ds)] and len(ds.train) == 7
    assert LINE.match(lines[0]) and "(--min-sharpness)" in lines[0]


def test_nothing_dropped_is_said_too(blurred_dataset):
    lines: list[str] = []
    ds = load(blurred_dataset, min_sharpness=1e-6, log=lines.append)
    assert len(ds.train) == 8
    assert lines[0].startswith("blurred frames: none of the 8 training frames has sharpness below 1e-06")
    assert "the lowest: r_3.png" in lines[0]


def test_the_option_reaches_load_through_the_run_config(blurred_dataset):
    from splatfield.apps.run_data import load_dataset

    lines: list[str] = []
    config = run_config(str(blurred_dataset), min_relative_sharpness=0.3)
    assert len(load_dataset(config, log=lines.append).train) == 7 and LINE.match(lines[0])
    assert len(load_dataset(run_config(str(blurred_dataset))).train) == 8


def test_run_log_says_what_was_dropped(blurred_dataset, tmp_path, native):
    from splatfield.apps import training

    lines: list[str] = []
    config = run_config(str(blurred_dataset), str(tmp_path / "run"), steps=2, init_points=300, init_half_size=1.0,
                        sh_degree=0, checkpoint_every=0, eval=False, save_renders=False, min_relative_sharpness=0.3)  # fmt: skip
    training.train(config, log=lines.append)
    dataset_line = next(i for i, m in enumerate(lines) if m.startswith("dataset: "))
    assert "7 train / 2 test views" in lines[dataset_line]
    assert LINE.match(lines[dataset_line + 1]), lines
    cameras = json.loads((tmp_path / "run" / "cameras.json").read_text())
    assert len(cameras["train"]) == 7 and not any(c["image"].endswith("r_3.png") for c in cameras["train"])
    assert "min_relative_sharpness: 0.3" in (tmp_path / "run" / "config.yaml").read_text()


def as_transforms_json(blender: Path, sharpness: dict[int, float]) -> Path:
    """The Blender dataset's training frames as one transforms.json, frame i carrying
    ``sharpness[i]`` where given."""
    meta = json.loads((blender / "transforms_train.json").read_text())
    for i, f in enumerate(meta["frames"]):
        if i in sharpness:
            f["sharpness"] = sharpness[i]
    (blender / "transforms.json").write_text(json.dumps(meta))
    return blender / "transforms.json"


def test_transforms_json_sharpness_field_is_used(blurred_dataset):
    # the file says frame 5 is the blurred one (and frame 3 sharp): the file is believed
    given = {i: 100.0 for i in range(8)} | {5: 10.0}
    path = as_transforms_json(blurred_dataset, given)
    lines: list[str] = []
    ds = load(path, test_every=0, min_relative_sharpness=0.3, log=lines.append)
    assert ds.format == "transforms_json"
    assert train_names(ds) == [f"r_{i}.png" for i in range(8) if i != 5]
    assert "r_5.png (10)" in lines[0] and "the dataset's own sharpness field" in lines[0]
    assert "below 0.3 x the median 100 = 30" in lines[0]

    # a frame without the field: the scores are all computed, so that they share one scale
    del given[0]
    as_transforms_json(blurred_dataset, given)
    lines.clear()
    ds = load(path, test_every=0, min_relative_sharpness=0.3, log=lines.append)
    assert train_names(ds) == [f"r_{i}.png" for i in range(8) if i != BLURRED]
    assert "variance of the Laplacian" in lines[0]


def test_every_frame_below_the_floor_is_a_one_line_error(blurred_dataset):
    with pytest.raises(DatasetError) as e:
        load(blurred_dataset, min_sharpness=1e12)
    msg = str(e.value)
    assert "\n" not in msg and "every one of the 8 training frames has sharpness below 1e+12 (--min-sharpness)" in msg


def test_unreadable_image_is_a_one_line_error_naming_it(blurred_dataset):
    frame = blurred_dataset / "train" / "r_5.png"
    frame.write_bytes(frame.read_bytes()[:200])  # the header (and its size) still reads
    with pytest.raises(DatasetError) as e:
        load(blurred_dataset, min_relative_sharpness=0.5)
    assert e.value.file == str(frame) and "cannot read the image to score its sharpness" in str(e.value)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- SfM inputs


def test_photo_folder_reports_blurred_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        im = picture(640, 480, seed=i)
        (im.filter(ImageFilter.GaussianBlur(3)) if i == 2 else im).save(photos / f"p{i}.jpg", quality=95)
    files = sorted(photos.glob("*.jpg"))
    prep = prepare_images(files, tmp_path / "o" / "images", tmp_path / "o" / "masks", tmp_path / "s" / "images",
                          tmp_path / "s" / "masks", max_size=320)  # fmt: skip
    assert sorted(prep.sharpness) == [f.name for f in files]
    assert prep.sharpness["p2.jpg"] == pytest.approx(S.file_sharpness(photos / "p2.jpg"), rel=0.05)
    lines: list[str] = []
    low = S.report_blurred(prep.names, [prep.sharpness[n] for n in prep.names], lines.append)
    assert [prep.names[i] for i in low] == ["p2.jpg"]
    assert lines[0].startswith("sharpness: 1 of 5 images look blurred") and "p2.jpg (" in lines[0]


@needs_fox
def test_sfm_reports_the_blurred_photo_and_says_it_again_when_reused(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pycolmap")
    from splatfield.apps import cli
    from splatfield.data import sfm

    monkeypatch.setenv("SPLATFIELD_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "photos"
    names = fox_subset(d, count=8, size=(270, 480))
    with Image.open(d / names[4]) as im:
        im.filter(ImageFilter.GaussianBlur(3)).save(d / names[4], quality=95)
    said = "sfm: sharpness: 1 of 8 images look blurred (below 0.5 x the median "
    assert cli.run(["sfm", str(d)]) == 0
    out = capsys.readouterr().out
    assert said in out and f"): {names[4]} (" in out and "--min-relative-sharpness 0.5" in out
    summary = sfm.cached_or_run(d).summary
    assert summary["blurred"] == [names[4]] and sorted(summary["sharpness"]) == names
    assert cli.run(["sfm", str(d)]) == 0
    out = capsys.readouterr().out
    assert "sfm: reusing" in out and said in out


# ----------------------------------------------------------------------------- options


FLOOR = "--min-sharpness: must be > 0 and finite"
FRACTION = "--min-relative-sharpness: a fraction of the median lies in (0, 1]"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_sharpness": 0.0}, f"{FLOOR} (got 0.0)"),
        ({"min_sharpness": -5.0}, f"{FLOOR} (got -5.0)"),
        ({"min_sharpness": float("nan")}, f"{FLOOR} (got nan)"),
        ({"min_relative_sharpness": 0.0}, f"{FRACTION} (got 0)"),
        ({"min_relative_sharpness": 1.5}, f"{FRACTION} (got 1.5)"),
        ({"min_relative_sharpness": float("inf")}, f"{FRACTION} (got inf)"),
    ],
)
def test_bad_values_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        DataConfig(**options)
    assert "\n" not in str(e.value)


def test_config_yaml_round_trip_and_its_errors():
    cfg = run_config("data", min_sharpness=40.0, min_relative_sharpness=0.5)
    assert RunConfig.from_document(cfg.to_document()) == cfg
    with pytest.raises(ConfigError, match=re.escape("dataset.min_relative_sharpness: expected a number, got 'half'")):
        from_dict(RunConfig, {"data": "d", "dataset": {"min_relative_sharpness": "half"}})
    assert DataConfig().min_sharpness is None and DataConfig().min_relative_sharpness is None  # off by default


@pytest.mark.parametrize(
    "argv, starts",
    [
        (["--min-relative-sharpness", "2"], "splatfield: error: --min-relative-sharpness: a fraction of the median"),
        (["--min-sharpness", "-1"], "splatfield: error: --min-sharpness: must be > 0 and finite (got -1.0)"),
    ],
)
def test_command_line_errors_are_one_line(tmp_path, argv, starts):
    assert_one_line_error(run_cli("train", ".", *argv, cwd=tmp_path), code=2, starts=starts)


def test_command_line_every_frame_dropped_is_one_line(blurred_dataset, tmp_path):
    proc = run_cli("train", str(blurred_dataset), "--out", str(tmp_path / "run"), "--min-sharpness", "1e12",
                   "--steps", "1", cwd=tmp_path)  # fmt: skip
    line = assert_one_line_error(proc, code=2, starts="splatfield: error: ")
    assert "every one of the 8 training frames has sharpness below 1e+12" in line
