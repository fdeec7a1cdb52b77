"""The Gaussian-count cap of the densifying strategies (``--adc.max-gaussians``, shared by adc
and steepest): densification never takes the count above it and, when it would, keeps the
strongest candidates; pruning goes on; no cap is the strategies' behaviour unchanged; the
option is parsed, checked, saved in config.yaml and kept on resume."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import yaml

from splatfield.apps import cli
from splatfield.apps.run_data import load_dataset, load_views
from splatfield.apps.training import new_trainer
from splatfield.scenes import ops
from splatfield.scenes.config import ConfigError
from splatfield.scenes.options import RunConfig, run_config
from splatfield.scenes.run import Run, read_config
from splatfield.scenes.strategies.adc import ADC
from splatfield.scenes.strategies.options import AdcConfig, SteepestConfig
from splatfield.scenes.strategies.registry import make_strategies

from .test_adc import EXTENT, H, W, fake_render, scene_of
from .test_run_options import data, one_error_line, train_cli  # noqa: F401  (data: the demo dataset fixture)
from .test_steepest import _scene as steepest_scene
from .test_steepest import _strategy_with

REFINE = AdcConfig().refine_start  # a densification step of the default schedule, before the first reset
NEXT_REFINE = REFINE + AdcConfig().refine_every
HIGH = 3 * AdcConfig().grad_threshold / (0.5 * max(W, H))  # a grad2d above adc's threshold
SMALL, LARGE = 0.5 * AdcConfig().clone_scale * EXTENT, 4 * AdcConfig().clone_scale * EXTENT  # cloned, split

# the real training loop: a 24-pixel procedural capture, 600 random points, densification every
# 10 steps from step 10 (its window ends at 70% of the run), no opacity reset after the first
LOOP_STEPS = 60
LOOP = dict(steps=LOOP_STEPS, init_points=600, init_half_size=1.0, sh_degree=1, adc_refine_start=10,
            adc_refine_every=10, adc_reset_every=10_000)  # fmt: skip
# steepest with every negative-curvature Gaussian a candidate, so that it wants many splits
STEEPEST_EAGER = dict(split_threshold=0.0, split_grad_gate=False)
# adc's offspring are drawn from the parent: within this many of its largest standard deviations
OFFSPRING_SPREAD = 5.0
# steepest's pair sits at mu +- delta: its midpoint is the parent's mean up to float32 rounding
PAIR_MIDPOINT_ATOL = 1e-6


def loop_counts(data, strategy: str, **options) -> tuple[list[int], list[dict], object]:
    """Trains LOOP_STEPS steps; the count after every step and after every densification, the
    changes of every densification (with ``densified``: the count it left before its pruning,
    ``added``: the Gaussians it added), and the trainer."""
    cfg = run_config(str(data), "unused", (strategy,), **LOOP, **options)
    dataset = load_dataset(cfg)
    trainer = new_trainer(cfg, dataset, load_views(dataset.train))
    counts, events = [], []
    for _ in range(LOOP_STEPS):
        info = trainer.train_step()
        counts.append(len(trainer.scene))
        if "split" in info.changes:
            e = dict(info.changes)
            e["densified"] = len(trainer.scene) + e["pruned"]  # the event's pruning comes after its densification
            e["added"] = e["split"] + e.get("cloned", 0)  # a clone or a split adds one
            counts.append(e["densified"])
            events.append(e)
    return counts, events, trainer


def adc_with(cap: int | None) -> ADC:
    return ADC(AdcConfig(max_gaussians=cap))


def capped_steepest(cfg: SteepestConfig, lam: list[float], grad: list[float], cap: int | None):
    s = _strategy_with(cfg, lam, grad)
    s.config = dataclasses.replace(s.config, max_gaussians=cap)
    return s


def rows(scene) -> list[float]:
    """Each Gaussian's identity in scene_of/steepest_scene scenes: its mean's x (the row it began at)."""
    return scene.params["means"].detach()[:, 0].tolist()


# ----------------------------------------------------------------------------- (1) never above the cap


def test_adc_count_stays_under_the_cap_over_densifications_and_reaches_it():
    # ten Gaussians, all with a high gradient at every densification: uncapped they would double each time
    n, cap = 10, 25
    scene = scene_of([SMALL, LARGE] * (n // 2), [0.5] * n)
    adc = adc_with(cap)
    counts, capped = [], []
    for step in (REFINE, NEXT_REFINE, NEXT_REFINE + 100, NEXT_REFINE + 200):
        m = len(scene)
        adc.after_backward(step, scene, fake_render([HIGH] * m, [True] * m, [2] * m))
        changes = adc.after_step(step, scene, torch.Generator().manual_seed(step))
        counts.append(len(scene))
        capped.append(changes["capped"])
    assert counts == [20, 25, 25, 25]
    assert capped == [0, 15, 25, 25]  # the candidates left out: all of them once at the cap


@pytest.mark.parametrize("strategy, options, cap", [("adc", {}, 1500), ("steepest", STEEPEST_EAGER, 900)])
def test_training_never_exceeds_the_cap_and_fills_it(data, native, strategy, options, cap):  # noqa: F811
    free, _, _ = loop_counts(data, strategy, **options)
    assert max(free) > cap  # uncapped, densification wants more than the cap
    counts, events, _ = loop_counts(data, strategy, adc_max_gaussians=cap, **options)
    assert max(counts) == cap  # reached, never passed (after every step and every densification)
    capped = [e for e in events if e["capped"]]
    assert len(capped) >= 2
    assert all(e["densified"] == cap for e in capped)  # candidates were left out only to stop at the cap
    # pruning at the cap made room, and the next densification added again up to the cap
    refilled = [b for a, b in zip(events, events[1:]) if a["capped"] and a["pruned"] and b["added"]]
    assert refilled and all(b["densified"] == cap for b in refilled)


# ----------------------------------------------------------------------------- (2) the strongest candidates


def test_adc_keeps_the_candidates_with_the_largest_gradient_across_clones_and_splits():
    # rows 0..5: small, large, small, large, small, large; gradients ranked 4 > 1 > 2 > 5 > 0 > 3,
    # row 3 below the threshold; room for 3: rows 4 (clone), 1 (split), 2 (clone)
    scene = scene_of([SMALL, LARGE] * 3, [0.5] * 6)
    grads = [x * HIGH for x in (1.2, 3.0, 2.5, 0.1, 4.0, 2.0)]
    adc = adc_with(9)
    adc.after_backward(REFINE, scene, fake_render(grads, [True] * 6, [2] * 6))
    changes = adc.after_step(REFINE, scene, torch.Generator().manual_seed(0))
    assert changes == {"cloned": 2, "split": 1, "pruned": 0, "capped": 2}
    assert len(scene) == 9
    ids = rows(scene)
    # survivors in order (row 1 split), then the clones of 2 and 4, then row 1's two offspring
    assert ids[:7] == [0.0, 2.0, 3.0, 4.0, 5.0, 2.0, 4.0]
    assert all(abs(x - 1.0) < OFFSPRING_SPREAD * LARGE for x in ids[7:])  # drawn around row 1


@pytest.mark.parametrize("criterion, threshold", [("curvature", 1e-3), ("loss-change", 1.2e-6)])
@pytest.mark.parametrize(
    "cap, max_splits, expect",
    [
        (5 + 2, None, [1, 3]),  # room for two: the two most negative of the candidates 0, 1, 3
        (5 + 1, None, [1]),
        (5 + 2, 1, [1]),  # the tighter of --max-splits and the cap
        (5 + 3, 2, [1, 3]),
        (5, None, []),  # at the cap: no split
    ],
)
def test_steepest_keeps_the_most_negative_candidates(criterion, threshold, cap, max_splits, expect):
    lam = [-0.002, -0.5, -0.0005, -0.1, 0.3]  # test_steepest's: candidates 0, 1, 3 (-0.0005 is above both)
    cfg = SteepestConfig(split_threshold=threshold, split_grad_gate=False, split_criterion=criterion,
                         max_splits=max_splits)  # fmt: skip
    s = capped_steepest(cfg, lam, [5e-4] * 5, cap)
    scene = steepest_scene(5)
    changes = s.after_step(REFINE, scene, torch.Generator())
    assert (changes["candidates"], changes["split"]) == (3, len(expect))
    assert changes["capped"] == min(3, max_splits or 3) - len(expect)
    assert len(scene) == 5 + len(expect) <= cap
    kept = [float(i) for i in range(5) if i not in expect]
    assert rows(scene)[: len(kept)] == kept  # the chosen parents are gone, the others stay in order
    kids = torch.tensor(rows(scene)[len(kept):]).view(2, -1)
    torch.testing.assert_close(kids.mean(0), torch.tensor(expect, dtype=torch.float32), rtol=0,
                               atol=PAIR_MIDPOINT_ATOL)  # pairs around the chosen  # fmt: skip


# ----------------------------------------------------------------------------- (3) pruning goes on


def test_adc_at_the_cap_still_prunes_and_then_fills_up_again():
    scene = scene_of([SMALL] * 6, [0.5, 0.001, 0.5, 0.001, 0.5, 0.5])  # rows 1, 3 transparent
    adc = adc_with(6)
    adc.after_backward(REFINE, scene, fake_render([HIGH] * 6, [True] * 6, [2] * 6))
    changes = adc.after_step(REFINE, scene, torch.Generator())
    assert changes == {"cloned": 0, "split": 0, "pruned": 2, "capped": 6}
    assert rows(scene) == [0.0, 2.0, 4.0, 5.0]
    # the room pruning made is densified at the next event: the two largest gradients (rows 4, 2)
    adc.after_backward(NEXT_REFINE, scene, fake_render([HIGH, 2 * HIGH, 3 * HIGH, HIGH], [True] * 4, [2] * 4))
    changes = adc.after_step(NEXT_REFINE, scene, torch.Generator())
    assert changes == {"cloned": 2, "split": 0, "pruned": 0, "capped": 2}
    assert rows(scene) == [0.0, 2.0, 4.0, 5.0, 2.0, 4.0]


def test_steepest_at_the_cap_still_prunes():
    s = capped_steepest(SteepestConfig(split_threshold=1e-3, split_grad_gate=False), [-0.5] * 5, [5e-4] * 5, 5)
    scene = steepest_scene(5)
    transparent = torch.logit(torch.tensor([1e-3]))
    ops.replace_rows(scene.params, scene.optimizer, "opacity_logits", torch.tensor([2]), transparent)
    assert float(scene.opacities[2]) < s.config.prune_opacity  # row 2 transparent
    changes = s.after_step(REFINE, scene, torch.Generator())
    assert (changes["split"], changes["capped"], changes["pruned"]) == (0, 5, 1)
    assert rows(scene) == [0.0, 1.0, 3.0, 4.0]


def test_a_scene_above_the_cap_is_not_pruned_down_to_it():
    scene = scene_of([SMALL] * 8, [0.5] * 7 + [0.001])
    adc = adc_with(3)
    adc.after_backward(REFINE, scene, fake_render([HIGH] * 8, [True] * 8, [2] * 8))
    changes = adc.after_step(REFINE, scene, torch.Generator())
    assert changes == {"cloned": 0, "split": 0, "pruned": 1, "capped": 8}  # only the usual pruning
    assert len(scene) == 7


# ----------------------------------------------------------------------------- (4) no cap: unchanged


@pytest.mark.parametrize("strategy, options", [("adc", {}), ("steepest", STEEPEST_EAGER)])
def test_no_cap_is_the_strategy_unchanged(data, native, strategy, options):  # noqa: F811
    counts, events, free = loop_counts(data, strategy, **options)
    assert max(counts) > LOOP["init_points"] and all("capped" not in e for e in events)  # it densified, uncapped
    _, capped_events, roomy = loop_counts(data, strategy, adc_max_gaussians=10 * max(counts), **options)
    assert all(e["capped"] == 0 for e in capped_events)
    # bitwise the same scene and optimizer state: a cap never reached changes nothing
    for name, p in free.scene.params.items():
        assert torch.equal(p.detach(), roomy.scene.params[name].detach()), name
        a, b = free.scene.optimizer.state[p], roomy.scene.optimizer.state[roomy.scene.params[name]]
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]), name
    # ... and the comparison can tell: a cap just under the peak changes the scene
    _, _, tight = loop_counts(data, strategy, adc_max_gaussians=max(counts) - 1, **options)
    means, free_means = tight.scene.params["means"].detach(), free.scene.params["means"].detach()
    assert means.shape != free_means.shape or not torch.equal(means, free_means)


# ----------------------------------------------------------------------------- (5) the option


def test_the_cli_parses_the_cap_for_adc_and_steepest():
    assert cli.parse(["train", "d"]).adc.max_gaussians is None
    for strategy in ("adc", "steepest"):
        cmd = cli.parse(["train", "d", "--strategy", strategy, "--adc.max-gaussians", "1000"])
        assert cmd.adc.max_gaussians == 1000 and "--adc.max-gaussians" in cmd.given
        (s,) = make_strategies(cmd.strategy, scene_kind="gaussians", adc=cmd.adc, steepest=cmd.steepest).items
        assert s.name == strategy and s.config.max_gaussians == 1000
    assert run_config("d", adc_max_gaussians=1000).adc.max_gaussians == 1000


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_cli_refuses_a_cap_below_one_in_one_line(value, capsys):
    message = f"--adc.max-gaussians: must be >= 1 (got {value})"
    with pytest.raises(ConfigError, match=re.escape(message)):
        cli.parse(["train", "d", "--adc.max-gaussians", value])
    assert cli.run(["train", "d", "--adc.max-gaussians", value]) == 2
    assert message in one_error_line(capsys)


def test_config_yaml_refuses_a_bad_cap_and_reads_an_old_one_without_it():
    doc = RunConfig(data="d", adc=AdcConfig(max_gaussians=5)).to_document()
    assert RunConfig.from_document(doc).adc.max_gaussians == 5
    doc["splatfield_run"]["adc"]["max_gaussians"] = 0
    with pytest.raises(ConfigError, match=re.escape("--adc.max-gaussians: must be >= 1 (got 0)")):
        RunConfig.from_document(doc)
    doc["splatfield_run"]["adc"]["max_gaussians"] = 2.5
    with pytest.raises(ConfigError, match="adc.max_gaussians: expected a whole number"):
        RunConfig.from_document(doc)
    del doc["splatfield_run"]["adc"]["max_gaussians"]  # a run made before the option
    assert RunConfig.from_document(doc).adc.max_gaussians is None


def test_the_cap_is_saved_in_config_yaml_and_kept_on_resume(data, tmp_path, native, monkeypatch, capsys):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    schedule = ["--adc.refine-start", "10", "--adc.refine-every", "10", "--adc.reset-every", "10000"]
    assert train_cli(str(data), "--out", "run", "--steps", "30", "--no-eval", "--adc.max-gaussians", "700",
                     *schedule) == 0  # fmt: skip
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["splatfield_run"]["adc"]["max_gaussians"] == 700
    capsys.readouterr()

    # resumed with a longer run: densification goes on to step 70, under the same cap
    assert train_cli("--resume", "run", "--steps", "100", "--no-eval") == 0
    config = read_config(tmp_path / "run" / "config.yaml")
    assert config.adc.max_gaussians == 700 and config.trainer.steps == 100
    log = [json.loads(x) for x in (tmp_path / "run" / "refinements.jsonl").read_text().splitlines()]
    densified = [e for e in log if "split" in e]
    assert [e["step"] for e in densified] == [10, 20, 40, 50, 60]
    assert all(e["gaussians"] + e["pruned"] <= 700 for e in densified)  # the count before the event's pruning
    assert any(e["capped"] > 0 for e in densified if e["step"] < 30)
    assert any(e["capped"] > 0 for e in densified if e["step"] > 30)  # the resumed strategy has the cap
    state, _ = Run.open(tmp_path / "run").load_state()
    assert state["step"] == 100 and state["scene"]["params"]["means"].shape[0] <= 700
    capsys.readouterr()

    assert train_cli("--resume", "run", "--steps", "110", "--adc.max-gaussians", "900") == 2
    assert "--adc.max-gaussians (the run has 700)" in one_error_line(capsys)
