"""Run options declared once: resume with a new length follows a fresh run's schedules,
options that cannot change on resume are refused, run directories of the first layout still
open, saved configs are validated, --config and --checkpoint, and strategies that combine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from splatfield.apps import cli
from splatfield.apps.run_data import load_dataset, load_views
from splatfield.apps.training import new_trainer
from splatfield.data import procedural
from splatfield.scenes import checkpoint as ckpt
from splatfield.scenes.config import ConfigError
from splatfield.scenes.options import RunConfig, check_strategies, run_config
from splatfield.scenes.run import Run, RunError, read_config
from splatfield.scenes.strategies.adc import ADC
from splatfield.scenes.strategies.base import Strategies
from splatfield.scenes.strategies.registry import make_strategies
from splatfield.scenes.trainer import Trainer

# a short schedule with every kind of event inside 400 steps: densification every 50 steps
# from step 50 and opacity resets every 100
SCHEDULE = ["--adc.refine-start", "50", "--adc.refine-every", "50", "--adc.reset-every", "100"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return procedural.write_demo_dataset(tmp_path_factory.mktemp("data") / "d", size=24, train_views=6, test_views=2)


def train_cli(*args: str) -> int:
    return cli.run(["train", *args, "--no-viewer", "--init-points", "600", "--init-half-size", "1.0", "--sh-degree", "1",
                    "--no-save-renders", "--threads", "1"])  # fmt: skip


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("splatfield: error: ")
    return err[0]


def files_of(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- resume


def test_resume_with_more_steps_follows_a_fresh_run_of_the_new_length(data, tmp_path, native, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_cli(str(data), "--out", "run", "--steps", "200", "--checkpoint-every", "0", *SCHEDULE) == 0
    before = (tmp_path / "run" / "config.yaml").read_text()
    state, _ = Run.open(tmp_path / "run").load_state()
    assert state["step"] == 200

    assert train_cli("--resume", "run", "--steps", "400") == 0
    run = Run.open(tmp_path / "run")
    assert run.config.trainer.steps == 400
    kept = sorted(tmp_path.glob("run/config.before-resume-at-200*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == before  # the replaced config stays beside it

    fresh_cfg = run_config(str(data), "x", steps=400, init_points=600, init_half_size=1.0, sh_degree=1,
                           adc_refine_start=50, adc_refine_every=50, adc_reset_every=100)  # fmt: skip
    assert fresh_cfg.adc == run.config.adc and fresh_cfg.scene == run.config.scene
    dataset = load_dataset(fresh_cfg)
    views = load_views(dataset.train)
    fresh = new_trainer(fresh_cfg, dataset, views)
    resumed = new_trainer(run.config, dataset, views, state)  # the trainer the resume built
    for step in range(201, 401):
        assert resumed.schedule_at(step) == fresh.schedule_at(step), step
    # the events of the new length are really there (not only equal): densification goes on
    # until 70% of 400 steps, where a 200-step run stopped at 140
    plan = {s: fresh.schedule_at(s) for s in range(201, 401)}
    assert [s for s, p in plan.items() if p["refine"]] == [250]
    assert [s for s, p in plan.items() if p["opacity_reset"]] == []  # 300 is past the window
    # ... and the learning rate the optimizer uses after a resumed step is the fresh schedule's
    resumed.train_step()
    lr = {g["name"]: g["lr"] for g in resumed.scene.optimizer.param_groups}
    assert lr["means"] == fresh.schedule_at(201)["lr.means"]
    steps_logged = [json.loads(x)["step"] for x in (tmp_path / "run" / "refinements.jsonl").read_text().splitlines()]
    assert [s for s in steps_logged if s > 200] == [250]


def test_resume_refuses_an_option_that_cannot_change(data, tmp_path, native, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli(str(data), "--out", "run", "--steps", "30", "--seed", "3") == 0
    capsys.readouterr()
    snapshot = files_of(tmp_path / "run")
    code = train_cli("--resume", "run", "--steps", "60", "--seed", "4", "--downscale", "2")
    assert code == 2
    line = one_error_line(capsys)
    assert "--seed (the run has 3)" in line and "--downscale (the run has 1.0)" in line and "--resume" in line
    assert files_of(tmp_path / "run") == snapshot  # nothing in the run directory changed
    # the same value as the run's is no change: accepted
    assert train_cli("--resume", "run", "--steps", "40", "--seed", "3") == 0
    assert Run.open(tmp_path / "run").config.trainer.steps == 40


def test_resume_from_a_chosen_checkpoint_sets_the_later_ones_aside(data, tmp_path, native, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli(str(data), "--out", "run", "--steps", "30", "--checkpoint-every", "10", "--keep-checkpoints", "5") == 0
    assert [s for s, _ in ckpt.checkpoints(tmp_path / "run" / "checkpoints")] == [10, 20, 30]
    assert train_cli("--resume", "run", "--checkpoint", "7") == 2
    assert "no checkpoint of step 7 (there are: 10, 20, 30)" in one_error_line(capsys)
    assert train_cli("--resume", "run", "--checkpoint", "10") == 0
    assert "resumed run at step 10" in capsys.readouterr().out
    assert [s for s, _ in ckpt.checkpoints(tmp_path / "run" / "checkpoints")] == [10, 20, 30]  # 20, 30 anew
    aside = list((tmp_path / "run" / "checkpoints").glob("after-10-*"))
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == ["step_0000020.pt", "step_0000030.pt"]


def _first_layout(run: Path, data: Path) -> None:
    """Rewrites a run the way splatfield wrote it before the options were sectioned: a flat
    ``splatfield_train`` config and checkpoints with one ``strategy`` and no scene kind."""
    old = {"data": str(data), "out": str(run), "strategy": "adc", "steps": 30, "downscale": 1.0, "test_every": 8,
           "seed": 0, "sh_degree": 1, "init_points": 600, "init_half_size": 1.0, "checkpoint_every": 1000,
           "keep_checkpoints": 3, "evaluate": True, "save_renders": False, "split_threshold": 1e-6,
           "split_grad_gate": True, "split_displacement": 1.0, "max_splits": None, "projection_curvature": True,
           "split_criterion": "curvature"}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump({"splatfield_train": old}, sort_keys=False))
    for _, path in ckpt.checkpoints(run / "checkpoints"):
        state = ckpt.load_checkpoint(path)
        (single,) = state.pop("strategies")
        state["strategy"] = single
        del state["scene"]["kind"]
        torch.save(state, path)


def test_a_run_of_the_first_layout_opens_everywhere_and_resumes(data, tmp_path, native, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli(str(data), "--out", "run", "--steps", "30") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _first_layout(tmp_path / "run", data)
    config = read_config(tmp_path / "run" / "config.yaml")
    assert config.strategy == ("adc",) and config.trainer.steps == 30 and config.scene.sh_degree == 1
    assert config.outputs.save_renders is False and config.steepest.split_criterion == "curvature"
    capsys.readouterr()
    assert cli.run(["eval", "run"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["psnr"] == metrics["psnr"]
    assert cli.run(["render", "run", "--split", "test"]) == 0
    assert cli.run(["render", "run", "--frames", "2", "--size", "16", "16"]) == 0
    assert cli.run(["export", "run", "--format", "splat"]) == 0
    from splatfield.apps.viewer.sessions import open_view

    viewer = open_view(tmp_path / "run", host="127.0.0.1", port=0, log=lambda m: None)
    try:
        assert len(viewer.scene_snapshot()) == metrics["num_gaussians"]
    finally:
        viewer.stop()
    assert train_cli("--resume", "run", "--steps", "35") == 0
    assert Run.open(tmp_path / "run").config.trainer.steps == 35
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))["step"] == 35


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scene": {"sh_degree": 5}}, "scene.sh_degree: 5 is not one of 0, 1, 2, 3"),
        ({"trainer": {"steps": 0}}, "--steps: must be >= 1 (got 0)"),
        ({"trainer": {"steps": "many"}}, "trainer.steps: expected a whole number"),
        ({"strategy": ["adc", "steepest"]}, "--strategy: adc and steepest both add and remove Gaussians"),
        ({"strategy": ["magic"]}, "strategy[0]: 'magic' is not one of"),
        ({"colour": "red"}, "colour: unknown option"),
        ({"adc": {"grad_treshold": 1}}, "adc.grad_treshold: unknown option"),
    ],
)
def test_a_saved_config_is_validated_when_read(tmp_path, change, message):
    doc = RunConfig(data="d").to_document()
    for key, value in change.items():
        if isinstance(value, dict):
            doc["splatfield_run"][key].update(value)
        else:
            doc["splatfield_run"][key] = value
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RunError) as e:
        read_config(tmp_path / "config.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'config.yaml'}: ") and message in str(e.value)


def test_config_round_trips():
    c = run_config("d", "o", ("steepest",), steps=123, downscale=2.0, split_threshold=1e-8, adc_refine_stop=77,
                   eval=False, sh_degree=2)  # fmt: skip
    assert RunConfig.from_document(yaml.safe_load(yaml.safe_dump(c.to_document()))) == c


def test_a_new_run_from_a_saved_config(data, tmp_path, native, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_cli(str(data), "--out", "a", "--steps", "20", "--seed", "5", "--no-eval") == 0
    assert train_cli("--config", "a/config.yaml", "--out", "b", "--steps", "25") == 0
    a, b = read_config(tmp_path / "a" / "config.yaml"), read_config(tmp_path / "b" / "config.yaml")
    assert b.trainer.steps == 25 and b.trainer.seed == 5 and b.outputs.eval is False and b.data == a.data
    assert b.out == "b"


def test_option_ranges_are_checked_while_parsing(capsys):
    for argv, message in [
        (["train", "d", "--split-threshold", "-1"], "--split-threshold: must be >= 0 and finite (got -1.0)"),
        (["train", "d", "--adc.refine-every", "0"], "--adc.refine-every: must be >= 1 (got 0)"),
        (["train", "d", "--strategy", "steepest", "none"], "--strategy: none cannot be combined"),
        (["train", "d", "--strategy", "adc", "steepest"], "--strategy: adc and steepest both add and remove"),
        (["train", "d", "--viewer-port", "70000"], "--viewer-port: must be a port number"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            cli.parse(argv)
        assert cli.run(argv) == 2
        assert message in one_error_line(capsys)


# ----------------------------------------------------------------------------- strategies


class Toy:
    """A second strategy: asks for a statistic adc does not, adds a loss term, counts its
    calls and keeps a sum of the importance it reads."""

    name = "toy"
    scene_kinds = frozenset({"gaussians"})
    statistics = ("importance",)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.importance_sum = torch.zeros(())

    def extra_loss(self, step, scene, batch, out):
        self.calls.append("loss")
        return 1e-3 * scene.params["opacity_logits"].sigmoid().mean()

    def after_backward(self, step, scene, out):
        self.calls.append("backward")
        assert set(out.stats.requested) == {"grad2d", "importance"}  # the union reached the renderer
        self.importance_sum = self.importance_sum + out.stats.importance.sum()

    def after_step(self, step, scene, generator):
        self.calls.append("step")
        return {"toy_steps": step, "pruned": -1} if step % 2 == 0 else {}

    def schedule_at(self, step):
        return {"toy": step % 2 == 0}

    def state_dict(self):
        return {"importance_sum": self.importance_sum.clone(), "calls": len(self.calls)}

    def load_state_dict(self, state):
        self.importance_sum = state["importance_sum"]
        self.calls = ["?"] * state["calls"]


def test_strategies_combine_around_one_step(data, native):
    config = run_config(str(data), steps=40, init_points=600, init_half_size=1.0, sh_degree=1)
    dataset = load_dataset(config)
    views = load_views(dataset.train)
    trainer = new_trainer(config, dataset, views)
    toy = Toy()
    trainer.strategies = Strategies([*trainer.strategies.items, toy])
    assert trainer.strategies.statistics == ("grad2d", "importance")
    infos = [trainer.train_step() for _ in range(4)]
    assert toy.calls == ["loss", "backward", "step"] * 4
    assert float(toy.importance_sum) > 0
    # changes merge; a key that two strategies report is prefixed by the second's name
    assert infos[1].changes == {"toy_steps": 2, "pruned": -1} and infos[0].changes == {}
    merged = Strategies([ADC(), Toy()])._merged(lambda s: {"pruned": 1 if s.name == "adc" else 2})
    assert merged == {"pruned": 1, "toy.pruned": 2}
    assert trainer.schedule_at(2)["toy"] is True and "refine" in trainer.schedule_at(2)

    # each keeps its own state, through a checkpoint
    state = trainer.state_dict()
    assert [s["name"] for s in state["strategies"]] == ["adc", "toy"]
    again = new_trainer(config, dataset, views)
    toy2 = Toy()
    again.strategies = Strategies([*again.strategies.items, toy2])
    again.load_state_dict(state)
    assert torch.equal(toy2.importance_sum, toy.importance_sum) and len(toy2.calls) == 12
    assert torch.equal(again.strategies.items[0].grad_sum, trainer.strategies.items[0].grad_sum)
    # a checkpoint of other strategies is refused
    with pytest.raises(ValueError, match=r"trained with strategies \['adc', 'toy'\], not \['adc'\]"):
        new_trainer(config, dataset, views, state)


def test_a_strategy_says_which_scene_kinds_it_accepts(data, native):
    config = run_config(str(data), steps=10, init_points=600, init_half_size=1.0, sh_degree=1)
    dataset = load_dataset(config)
    trainer = new_trainer(config, dataset, load_views(dataset.train))

    class FieldOnly(Toy):
        name = "field-only"
        scene_kinds = frozenset({"field"})

    with pytest.raises(ValueError, match="strategy field-only works on field scenes, not on gaussians"):
        Trainer(trainer.scene, [FieldOnly()], trainer.views)
    with pytest.raises(ConfigError, match="--strategy: strategy adc works on gaussians scenes, not on field"):
        make_strategies(("adc",), scene_kind="field")
    assert check_strategies(("none",)) == ()
    with pytest.raises(ConfigError, match="named twice"):
        check_strategies(("adc", "adc"))


def test_gaussians_implement_the_scene_protocol():
    from splatfield.render import Gaussians
    from splatfield.scenes.gaussian_scene import FixedGaussians, GaussianScene
    from splatfield.scenes.scene import Renderable, Scene

    g = Gaussians.from_rgb(torch.zeros(3, 3), torch.full((3, 3), 0.1), torch.tensor([[1.0, 0, 0, 0]] * 3),
                           torch.full((3,), 0.5), torch.rand(3, 3))  # fmt: skip
    scene = GaussianScene(g, extent=1.0)
    assert isinstance(scene, Scene) and isinstance(scene, Renderable)
    fixed = scene.snapshot()
    assert isinstance(fixed, FixedGaussians) and isinstance(fixed, Renderable) and not isinstance(fixed, Scene)
    scene.params["means"].data += 1.0  # a snapshot does not follow later edits
    assert torch.equal(fixed.points(), torch.zeros(3, 3))


def test_export_refuses_a_scene_that_is_not_gaussians(small_run, monkeypatch, capsys):
    from splatfield.apps import exporting, sources

    real = sources.open_source

    def a_field(path, *device):
        src = real(path, *device)
        src.scene.kind = "field"  # what a radiance-field run will hold
        return src

    monkeypatch.setattr(exporting, "open_source", a_field)
    assert cli.run(["export", str(small_run), "--format", "spz"]) == 2
    assert one_error_line(capsys).endswith("holds a field scene; the splat formats hold Gaussians only")
