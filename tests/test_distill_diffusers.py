"""Guidance from a diffusers checkpoint folder (issue 17's plumbing): a tiny randomly
initialised UNet (and VAE) saved with ``save_pretrained`` loads through the same path a
user's Stable Diffusion folder would, stays frozen, and SDS through it reaches only the
scene being rendered; a missing or incomplete folder is a one-line error naming what is
missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .scenes import SceneSpec, make_cameras, make_gaussians
from splatfield.render import rasterize
from splatfield.scenes.distill import (
    DiffusersGuidance,
    GuidanceError,
    NoiseSchedule,
    distillation_loss,
    sds_gradient,
)

diffusers = pytest.importorskip("diffusers")  # a project dependency: installed by `make setup`


def tiny_unet(in_channels: int = 3):
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=in_channels, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip


def save_text_encoder(root: Path) -> None:
    """A tiny CLIP tokenizer (byte-level, no merges: one token per character) and a random
    8-wide CLIP text encoder in Stable Diffusion's layout (tokenizer/, text_encoder/)."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + k) for k in range(256 - len(printable))]  # GPT-2's byte alphabet
    words = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    raw = root / "tokenizer-files"
    raw.mkdir(parents=True)
    (raw / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=12).save_pretrained(root / "tokenizer")
    torch.manual_seed(2)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(words), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=12, bos_token_id=len(words) - 2,
                                 eos_token_id=len(words) - 1, pad_token_id=len(words) - 1)).save_pretrained(root / "text_encoder")  # fmt: skip


def save_checkpoint(root: Path, *, prediction: str = "epsilon", vae: bool = False, text: bool = False) -> Path:
    if text:
        save_text_encoder(root)
    tiny_unet(4 if vae else 3).save_pretrained(root / "unet")
    diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            prediction_type=prediction).save_pretrained(root / "scheduler")  # fmt: skip
    if vae:
        torch.manual_seed(1)
        diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                                norm_num_groups=4, layers_per_block=1, sample_size=32,
                                down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2).save_pretrained(root / "vae")  # fmt: skip
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("tiny-sd"))


def test_the_schedule_is_the_checkpoints(checkpoint):
    guidance = DiffusersGuidance(checkpoint)
    assert torch.allclose(guidance.schedule.alphas_cumprod, NoiseSchedule.from_betas("scaled_linear").alphas_cumprod, rtol=1e-5)
    assert guidance.sample_size == 16
    assert not any(p.requires_grad for p in guidance.unet.parameters())


def render_scene(spec: SceneSpec):
    gen = torch.Generator().manual_seed(spec.seed)
    cameras = make_cameras(spec, gen)
    gaussians = make_gaussians(spec, gen, cameras).requires_grad_()
    return gaussians, cameras


@pytest.mark.parametrize("vae", [False, True], ids=["pixels", "latents"])
def test_sds_through_the_unet_reaches_only_the_scene(vae, tmp_path, native):
    guidance = DiffusersGuidance(save_checkpoint(tmp_path / "ckpt", vae=vae))
    before = {k: v.clone() for k, v in guidance.unet.state_dict().items()}
    gaussians, cameras = render_scene(SceneSpec(seed=3, n=60, width=24, height=24, cameras=2))
    image = rasterize(gaussians, cameras, background=[1.0, 1.0, 1.0]).image  # [2, 24, 24, 3]
    x = guidance.encode(image)
    assert x.shape == ((2, 4, 16, 16) if vae else (2, 3, 16, 16))
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([200, 700])
    grad = sds_gradient(guidance, x, t, torch.randn(x.shape, generator=gen), torch.randn(4, 8, generator=gen),
                        guidance_scale=7.5)  # fmt: skip
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    opt = torch.optim.Adam(gaussians.tensors(), lr=1e-2)
    distillation_loss(x, grad).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (gaussians.means, gaussians.sh0, gaussians.opacity_logits))
    assert all(p.grad is None for p in guidance.unet.parameters())
    if vae:
        assert all(p.grad is None for p in guidance.vae.parameters())
    opt.step()
    after = guidance.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_v_prediction_is_converted_to_noise(tmp_path):
    eps_model = DiffusersGuidance(save_checkpoint(tmp_path / "eps"))
    v_model = DiffusersGuidance(save_checkpoint(tmp_path / "v", prediction="v_prediction"))
    gen = torch.Generator().manual_seed(2)
    x_t, t = torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([10, 900])
    raw = eps_model.predict_noise(x_t, t)  # the same weights: the UNet's raw output
    a = v_model.schedule.alpha(t).float().view(-1, 1, 1, 1)
    s = v_model.schedule.sigma(t).float().view(-1, 1, 1, 1)
    assert torch.allclose(v_model.predict_noise(x_t, t), s * x_t + a * raw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_a_perfect_output_in_each_prediction_type_is_read_back_as_the_noise(tmp_path, prediction):
    """The target a prior trains on (NoiseSchedule.training_target, lift-prior's loss) and
    the guidance's reading of the UNet's output are inverse to each other, for each type."""
    guidance = DiffusersGuidance(save_checkpoint(tmp_path, prediction=prediction))
    gen = torch.Generator().manual_seed(3)
    x, eps = torch.randn(3, 3, 16, 16, generator=gen), torch.randn(3, 3, 16, 16, generator=gen)
    t = torch.tensor([0, 500, 999])
    x_t = guidance.schedule.add_noise(x, t, eps)
    out = guidance.schedule.training_target(prediction, x, eps, t)
    torch.testing.assert_close(guidance.noise_from_output(out, x_t, t), eps, rtol=0, atol=1e-4)


def test_a_prompt_goes_through_the_checkpoints_tokenizer_and_text_encoder(tmp_path):
    guidance = DiffusersGuidance(save_checkpoint(tmp_path / "sd", text=True))
    red, blue, empty = (guidance.encode_prompt(p) for p in ("a red cube", "a blue ball", ""))
    assert red.shape == (1, 12, 8) and not torch.allclose(red, blue) and not torch.allclose(red, empty)
    assert not any(p.requires_grad for p in guidance.text_encoder.parameters())
    x_t, t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([400])
    assert not torch.allclose(guidance.predict_noise(x_t, t, red), guidance.predict_noise(x_t, t, blue))
    torch.testing.assert_close(guidance.encode_prompt("a red cube"), red, rtol=0, atol=0)  # deterministic


def test_a_prompt_without_a_text_encoder_is_one_line(checkpoint):
    with pytest.raises(GuidanceError, match="a prompt needs the checkpoint's text encoder and tokenizer, missing text_encoder/config.json") as e:
        DiffusersGuidance(checkpoint).encode_prompt("a red cube")
    assert "\n" not in str(e.value) and str(checkpoint) in str(e.value)


def one_line_error(path) -> str:
    with pytest.raises(GuidanceError) as e:
        DiffusersGuidance(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_or_incomplete_folders_are_one_line_errors(checkpoint, tmp_path):
    assert "no such folder" in one_line_error(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    tiny_unet().save_pretrained(partial / "unet")
    assert "missing scheduler/scheduler_config.json" in one_line_error(partial)
    (partial / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert "missing unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json" in one_line_error(partial)
    broken = save_checkpoint(tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    assert "cannot load the checkpoint" in one_line_error(broken)


def test_decode_returns_images_from_model_space(tmp_path):
    """decode inverts encode exactly for a pixel-space model, and gives [B, 3, S, S] images
    through the VAE's decoder (differentiably) for a latent one: stein's depth baseline reads them."""
    images = torch.rand(2, 16, 16, 3)
    pixel = DiffusersGuidance(save_checkpoint(tmp_path / "pixel"))
    torch.testing.assert_close(pixel.decode(pixel.encode(images)), images.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    latent = DiffusersGuidance(save_checkpoint(tmp_path / "latent", vae=True))
    z = latent.encode(torch.rand(2, latent.sample_size, latent.sample_size, 3)).requires_grad_(True)
    out = latent.decode(z)
    assert out.shape == (2, 3, latent.sample_size, latent.sample_size)
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert grad.abs().sum() > 0
