"""Zero-1-to-3 checkpoints in their published diffusers layout (``unet/`` with 8 input
channels, ``vae/``, ``image_encoder/``, ``cc_projection/``, ``feature_extractor/``,
``scheduler/``, ``model_index.json``): a tiny random one saved with ``save_pretrained`` loads
as a reference-conditioned guidance; its condition follows the published camera convention
(Δpolar = reference elevation − elevation in radians, sin and cos of Δazimuth, Δradius); the
unconditional input is zeros; SDS through it reaches only the scene; and an incomplete folder
is a one-line error naming what is missing. No real checkpoint is downloaded."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from .scenes import SceneSpec, make_cameras, make_gaussians
from .test_distill_diffusers import one_line_error
from splatfield.render import rasterize
from splatfield.scenes.distill import DiffusersGuidance, GuidanceError, RenderModel, distillation_loss, sds_gradient
from splatfield.scenes.distill.zero123 import CLIP_MEAN, CLIP_STD, camera_vector, clip_input, load_projection

diffusers = pytest.importorskip("diffusers")  # a project dependency: installed by `make setup`
transformers = pytest.importorskip("transformers")

WIDTH = 8  # the UNet's cross-attention width, and the tiny CLIP's projection_dim (768 in the real one)


class CCProjection(diffusers.ModelMixin, diffusers.ConfigMixin):
    """What the community pipeline saves in ``cc_projection/``: one Linear named ``projection``
    (and no sizes in config.json: it registers none)."""

    def __init__(self) -> None:
        super().__init__()
        self.projection = torch.nn.Linear(WIDTH + 4, WIDTH)


def save_zero123(root: Path) -> Path:
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        cross_attention_dim=WIDTH, attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).save_pretrained(root / "unet")  # fmt: skip
    diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4,
                            layers_per_block=1, sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2).save_pretrained(root / "vae")  # fmt: skip
    config = transformers.CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           image_size=32, patch_size=8, projection_dim=WIDTH)  # fmt: skip
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(root / "image_encoder")
    CCProjection().save_pretrained(root / "cc_projection", safe_serialization=False)  # diffusers 0.18's default: a .bin
    diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                            set_alpha_to_one=False, steps_offset=1).save_pretrained(root / "scheduler")  # fmt: skip
    (root / "feature_extractor").mkdir()
    (root / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True, "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD), "resample": 3, "size": 32, "feature_extractor_type": "CLIPFeatureExtractor",
    }))  # fmt: skip
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "Zero1to3StableDiffusionPipeline", "_diffusers_version": "0.18.2",
        "cc_projection": ["pipeline_zero1to3", "CCProjection"], "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_zero123(tmp_path_factory.mktemp("tiny-zero123"))


@pytest.fixture(scope="module")
def guidance(checkpoint) -> DiffusersGuidance:
    return DiffusersGuidance(checkpoint)


def reference_image() -> torch.Tensor:
    return torch.rand(1, 20, 20, 3, generator=torch.Generator().manual_seed(5))


def condition(guidance, azimuth, elevation=None, ref=(20.0, 10.0)):
    azimuth = torch.as_tensor(azimuth, dtype=torch.float64)
    elevation = torch.full_like(azimuth, ref[0]) if elevation is None else torch.as_tensor(elevation, dtype=torch.float64)
    return guidance.reference_condition(reference_image(), torch.tensor([ref[0]], dtype=torch.float64),
                                        torch.tensor([ref[1]], dtype=torch.float64), elevation, azimuth)  # fmt: skip


def frozen_modules(guidance):
    return [guidance.unet, guidance.vae, guidance.reference_encoder.image_encoder, guidance.reference_encoder.projection]


def test_the_published_layout_loads_as_a_reference_conditioned_guidance(guidance):
    assert guidance.conditioning == "zero123" and guidance.takes_reference
    assert guidance.sample_size == 16 and guidance.unet.config.in_channels == 8
    for module in frozen_modules(guidance):
        assert not module.training and not any(p.requires_grad for p in module.parameters())


def test_the_camera_vector_follows_the_published_convention():
    """Zero123's (Δpolar, sin Δazimuth, cos Δazimuth, Δradius), polar = 90° − elevation: a view
    below the reference has a positive Δpolar; azimuth turns counter-clockwise seen from above."""
    ref_el, ref_az = torch.tensor([30.0], dtype=torch.float64), torch.tensor([10.0], dtype=torch.float64)
    el = torch.tensor([0.0, 45.0, 30.0, 30.0], dtype=torch.float64)
    az = torch.tensor([100.0, -80.0, 10.0, 40.0], dtype=torch.float64)
    expected = torch.tensor([[math.radians(30), 1.0, 0.0, 0.0], [math.radians(-15), -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                             [0.0, 0.5, math.sqrt(3) / 2, 0.0]], dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(camera_vector(ref_el.expand(4), ref_az.expand(4), el, az), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(camera_vector(ref_el, ref_az, el[:1], az[:1], 0.25)[0, 3], torch.tensor(0.25, dtype=torch.float64))


def test_the_condition_is_the_references_unscaled_latent_and_one_projected_token(guidance):
    cond = condition(guidance, [100.0, -80.0], elevation=[0.0, 45.0], ref=(30.0, 10.0))
    torch.testing.assert_close(cond.camera, torch.tensor([[math.radians(30), 1.0, 0.0, 0.0], [math.radians(-15), -1.0, 0.0, 0.0]]),
                               rtol=0, atol=1e-6)  # fmt: skip
    with torch.no_grad():  # the VAE's mode, not times scaling_factor: what Zero123 was trained with
        latent = guidance.vae.encode(guidance.pixels(reference_image())).latent_dist.mode()
    assert cond.reference.shape == (2, 4, 8, 8) and cond.tokens.shape == (2, 1, WIDTH)
    torch.testing.assert_close(cond.reference, latent.expand(2, -1, -1, -1), rtol=0, atol=0)
    assert not torch.allclose(cond.tokens[0], cond.tokens[1])  # the camera enters the token


def test_the_reference_reaches_clip_normalised_at_the_encoders_size():
    white = torch.ones(1, 20, 20, 3)
    x = clip_input(white, 32, CLIP_MEAN, CLIP_STD)
    expected = ((1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    torch.testing.assert_close(x, expected)


def test_the_condition_and_the_camera_change_the_prediction(guidance):
    gen = torch.Generator().manual_seed(1)
    x_t, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([300, 600])
    sample, states = guidance.unet_inputs(x_t, None)  # unconditional: a zero latent and a zero token
    assert sample.shape == (2, 8, 8, 8) and not sample[:, 4:].any() and torch.equal(sample[:, :4], x_t)
    assert states.shape == (2, 1, WIDTH) and not states.any()
    turned, other = condition(guidance, [100.0, 100.0]), condition(guidance, [200.0, 200.0])
    same, around = condition(guidance, [10.0, 10.0]), condition(guidance, [370.0, 370.0])
    unconditional = guidance.predict_noise(x_t, t)
    assert not torch.allclose(guidance.predict_noise(x_t, t, turned), unconditional, atol=1e-4)
    assert not torch.allclose(guidance.predict_noise(x_t, t, turned), guidance.predict_noise(x_t, t, other), atol=1e-4)
    torch.testing.assert_close(guidance.predict_noise(x_t, t, same), guidance.predict_noise(x_t, t, around), rtol=0, atol=1e-5)


def test_sds_through_zero123_reaches_only_the_scene(checkpoint, native):
    guidance = DiffusersGuidance(checkpoint)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen_modules(guidance)]
    gen = torch.Generator().manual_seed(3)
    spec = SceneSpec(seed=3, n=60, width=24, height=24, cameras=2)
    cameras = make_cameras(spec, gen)
    gaussians = make_gaussians(spec, gen, cameras).requires_grad_()
    image = rasterize(gaussians, cameras, background=[1.0, 1.0, 1.0]).image  # [2, 24, 24, 3]
    x = guidance.encode(image)
    assert x.shape == (2, 4, 8, 8)
    el, az = torch.tensor([20.0, 10.0], dtype=torch.float64), torch.tensor([0.0, 120.0], dtype=torch.float64)
    cond = guidance.reference_condition(image[:1].detach(), el[:1], az[:1], el, az)  # the first view is the reference
    t = torch.tensor([200, 700])
    grad = sds_gradient(guidance, x, t, torch.randn(x.shape, generator=gen), cond, guidance_scale=4.0)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    opt = torch.optim.Adam(gaussians.tensors(), lr=1e-2)
    distillation_loss(x, grad).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (gaussians.means, gaussians.sh0, gaussians.opacity_logits))
    assert all(p.grad is None for m in frozen_modules(guidance) for p in m.parameters())
    opt.step()
    for state, module in zip(before, frozen_modules(guidance)):
        after = module.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)


def test_the_second_model_of_vsd_adapts_zero123s_unet(checkpoint):
    guidance = DiffusersGuidance(checkpoint)
    model = RenderModel(guidance, adapter="lora", rank=2, seed=0, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(2)
    x_t, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([100, 800])
    torch.testing.assert_close(model.predict_noise(x_t, t), guidance.predict_noise(x_t, t))  # it starts as the identity
    camera = torch.eye(4).expand(2, 4, 4)
    assert math.isfinite(model.train_step(torch.randn(2, 4, 8, 8, generator=gen), camera))


def test_a_prompt_is_refused(guidance):
    with pytest.raises(GuidanceError, match="not on a prompt") as e:
        guidance.encode_prompt("a red cube")
    assert "\n" not in str(e.value)


def test_threestudios_folder_name_for_the_projection_is_read(checkpoint, tmp_path):
    """threestudio's ``Zero123Pipeline`` saves the same Linear as ``clip_camera_projection/`` ``proj``."""
    from safetensors.torch import save_file

    state = torch.load(checkpoint / "cc_projection" / "diffusion_pytorch_model.bin", weights_only=True)
    (tmp_path / "clip_camera_projection").mkdir()
    save_file({k.replace("projection.", "proj."): v for k, v in state.items()},
              tmp_path / "clip_camera_projection" / "diffusion_pytorch_model.safetensors")  # fmt: skip
    linear = load_projection(tmp_path, torch.float32)
    assert torch.equal(linear.weight, state["projection.weight"]) and torch.equal(linear.bias, state["projection.bias"])


@pytest.mark.parametrize(
    "remove, named",
    [("cc_projection", "cc_projection/diffusion_pytorch_model.safetensors"),
     ("image_encoder", "image_encoder/config.json, image_encoder/model.safetensors"),
     ("vae", "vae/config.json, vae/diffusion_pytorch_model.safetensors")],
)  # fmt: skip
def test_a_missing_part_is_a_one_line_error_naming_it(checkpoint, tmp_path, remove, named):
    partial = tmp_path / "partial"
    shutil.copytree(checkpoint, partial)
    shutil.rmtree(partial / remove)
    assert f"not a complete Zero-1-to-3 checkpoint, missing {named}" in one_line_error(partial)
