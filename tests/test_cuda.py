"""The CUDA drivers of the native rasterizer (cuda/gpu/*.cu).

Two kinds of tests:

* ``test_cuda_sources_compile`` runs ``nvcc -c`` on every CUDA source with the flags the
  real build uses. It needs nvcc, not a GPU, so it runs in CI; a successful compile is
  remembered under ``<splatfield cache>/nvcc-check/`` keyed by the sources, the headers,
  the command line, nvcc and torch, so an unchanged tree is not compiled twice.
* ``gpu``-marked tests call every ``torch.ops.splatfield`` op on the same random inputs on
  the CPU and on CUDA and compare every output and gradient with the named tolerances
  below. They are skipped without a CUDA device.
"""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

from splatfield.cuda import SOURCE_DIR, cuda_sources, header_files

# ------------------------------------------------------------------ tolerances

# Both drivers run the same shared header code with floating-point contraction off, so
# differences come only from the device's expf/logf (a couple of ulp) and from the order
# of the atomic per-entry sums on the GPU.
FWD_ATOL = 1e-5  # absolute, on outputs of order one (image, alpha, transmittance)
FWD_RTOL = 1e-5  # relative to the max |CPU value| of the tensor
GRAD_RTOL = 1e-4  # relative to the max |CPU gradient| of the tensor
# Projection radii are ceil()s of values computed with expf/logf/sqrtf, so a last-ulp
# difference may move one across an integer: allow +-1 pixel in a few of them.
RADIUS_ATOL = 1
RADIUS_MISMATCH_FRACTION = 0.005

GPU_SOURCES = cuda_sources()

# ------------------------------------------------------- compile check (CI, no GPU)


def _find_nvcc() -> str | None:
    from splatfield.render import _ext

    return _ext.find_nvcc()  # where the real build looks


def _nvcc_flags() -> list[str]:
    """The nvcc flags of the real build, for sm_90 (what SPLATFIELD_CUDA_BUILD=compile-only runs)."""
    from splatfield.render import _ext

    return _ext.nvcc_flags(["9.0"])


def _compile_key(nvcc: str, flags: list[str], src: Path) -> str:
    h = hashlib.sha256()
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    h.update(repr((nvcc, version, torch.__version__, flags)).encode())
    h.update(src.read_bytes())
    for path in header_files():
        h.update(str(path.relative_to(SOURCE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_cuda_sources_present_and_registered() -> None:
    """Every op of ops.cpp has exactly one CUDA implementation, registered once."""
    assert GPU_SOURCES, "no CUDA sources in cuda/gpu/"
    schemas = set(re.findall(r'"(\w+)\(Tensor', (SOURCE_DIR / "ops.cpp").read_text()))
    assert schemas == {
        "project_fwd", "project_bwd", "rasterize_fwd", "rasterize_bwd", "composite_fwd", "composite_bwd",
        "grid_sample_fwd", "grid_sample_bwd", "march_rays", "field_render", "sparse_adam_",
    }, schemas  # fmt: skip
    blocks = []
    for src in GPU_SOURCES:
        text = src.read_text()
        blocks += re.findall(r"TORCH_LIBRARY_IMPL\(\s*splatfield\s*,\s*CUDA\s*,\s*m\s*\)\s*\{(.*?)\}", text, re.S)
    assert len(blocks) == 1, f"expected one TORCH_LIBRARY_IMPL(splatfield, CUDA, m), found {len(blocks)}"
    # the block binds the drivers through SF_REGISTER_DRIVERS(m, cuda) of ops.h
    assert re.search(r"SF_REGISTER_DRIVERS\(\s*m\s*,\s*cuda\s*\)", blocks[0]), blocks[0]
    macro = re.search(r"#define SF_REGISTER_DRIVERS\(m, dev\)(.*?)\n\n", (SOURCE_DIR / "ops.h").read_text(), re.S)
    assert macro is not None
    registered = re.findall(r'm\.impl\("(\w+)"', macro.group(1))
    assert sorted(registered) == sorted(schemas)
    # and every driver it names is declared for CUDA
    assert re.search(r"SF_DECLARE_DRIVERS\(\s*cuda\s*\)", (SOURCE_DIR / "gpu" / "register.cu").read_text())


@pytest.mark.parametrize("src", GPU_SOURCES, ids=[p.name for p in GPU_SOURCES])
def test_cuda_sources_compile(src: Path, tmp_path: Path) -> None:
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda): cannot compile-check CUDA sources")
    from splatfield.render import _ext

    flags = _nvcc_flags()
    stamp_dir = _ext.cache_root() / "nvcc-check"
    stamp = stamp_dir / f"{src.stem}-{_compile_key(nvcc, flags, src)[:32]}.ok"
    if stamp.is_file():
        return  # this exact source, header set and command already compiled
    cmd = [nvcc, *flags, "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    rc = proc.returncode
    assert rc == 0, (
        f"nvcc failed on {src.name} (rc={rc})\ncommand: {' '.join(cmd)}\n"
        f"stderr:\n{proc.stderr[-20000:]}\nstdout:\n{proc.stdout[-4000:]}"
    )
    stamp_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(" ".join(cmd) + "\n")


# ------------------------------------------------------------ CPU vs CUDA (GPU)

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda"  # the device compared against the CPU


@pytest.fixture(scope="module")
def ops():
    if DEVICE == "cuda" and _find_nvcc() is None:
        pytest.skip("nvcc not found: the CUDA kernels cannot be built")
    from splatfield.render import _ext

    if not _ext.load():
        pytest.fail(f"the native CPU extension failed to build: {_ext.native_error()}")
    if DEVICE == "cuda" and not _ext.native_has_cuda():
        pytest.fail(f"native CUDA kernels unavailable: {_ext.unavailable_reason(torch.device('cuda'))}")
    return torch.ops.splatfield


def assert_matches(name: str, actual: torch.Tensor, expected: torch.Tensor, *, rtol: float, atol: float = 0.0) -> None:
    """max |actual - expected| <= atol + rtol * max |expected|; integers must be equal."""
    actual = actual.detach().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    if not expected.is_floating_point():
        bad = (actual != expected).sum().item()
        assert bad == 0, f"{name}: {bad} of {expected.numel()} entries differ"
        return
    if expected.numel() == 0:
        return
    assert torch.equal(torch.isnan(actual), torch.isnan(expected)), f"{name}: NaNs differ"
    a, e = torch.nan_to_num(actual), torch.nan_to_num(expected)
    scale = e.abs().max().item()
    err = (a - e).abs().max().item()
    assert err <= atol + rtol * scale, (
        f"{name}: max |{DEVICE} - cpu| = {err:.3g} > {atol:g} + {rtol:g} * {scale:.3g} "
        f"(at {tuple(int(i) for i in torch.nonzero((a - e).abs() == err)[0])})"
    )


def to_dev(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(DEVICE) for t in ts]


def make_cameras(B: int, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera 0 is the identity; further cameras are slightly rotated and shifted."""
    viewmats = torch.eye(4).repeat(B, 1, 1)
    for b in range(1, B):
        a = 0.05 * b
        viewmats[b, :3, :3] = torch.tensor(
            [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
        )
        viewmats[b, :3, 3] = torch.tensor([0.1 * b, -0.05 * b, 0.2 * b])
    f = 0.9 * width
    Ks = torch.tensor([[f, f, width / 2.0, height / 2.0]]).repeat(B, 1)
    return viewmats.contiguous(), Ks.contiguous()


def make_gaussians(N: int, width: int, height: int, seed: int, *, dense: bool = False, behind: float = 0.1):
    """N Gaussians spread over (and a little beyond) the identity camera's view."""
    g = torch.Generator().manual_seed(seed)
    f, cx, cy = 0.9 * width, width / 2.0, height / 2.0
    z = 2.0 + 4.0 * torch.rand(N, generator=g)
    u = torch.rand(N, generator=g) * (width + 20) - 10
    v = torch.rand(N, generator=g) * (height + 20) - 10
    means = torch.stack([(u - cx) / f * z, (v - cy) / f * z, z], dim=-1)
    flip = torch.rand(N, generator=g) < behind
    means[flip, 2] *= -1.0  # behind the camera: culled
    lo, hi = (0.05, 0.6) if dense else (0.01, 0.25)
    log_scales = torch.log(lo + (hi - lo) * torch.rand(N, 3, generator=g))
    quats = torch.randn(N, 4, generator=g)
    opacity_logits = torch.randn(N, generator=g) * 1.5 + (3.0 if dense else 0.0)
    sh = 0.4 * torch.randn(N, 16, 3, generator=g)
    return [t.contiguous() for t in (means, quats, log_scales, opacity_logits, sh)]


PROJECT_SETTINGS = dict(near_plane=0.01, far_plane=1e10, eps2d=0.3)


def project_args(width, height, sh_degree, antialiased):
    s = PROJECT_SETTINGS
    return (width, height, sh_degree, s["near_plane"], s["far_plane"], s["eps2d"], antialiased)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("antialiased", [False, True])
@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_project_matches_cpu(ops, sh_degree: int, antialiased: bool) -> None:
    W, H, B, N = 64, 48, 2, 300
    gauss = make_gaussians(N, W, H, seed=10 + sh_degree)
    viewmats, Ks = make_cameras(B, W, H)
    args = project_args(W, H, sh_degree, antialiased)
    cpu = ops.project_fwd(*gauss, viewmats, Ks, *args)
    dev = ops.project_fwd(*to_dev(*gauss, viewmats, Ks), *args)
    names = ("means2d", "conics", "opacities", "colors", "depths", "radii")
    for name, d, c in zip(names[:5], dev, cpu):
        assert_matches(f"project_fwd.{name}", d, c, rtol=FWD_RTOL)
    radii = cpu[5]
    diff = (dev[5].cpu() - radii).abs()
    assert diff.max() <= RADIUS_ATOL, f"project_fwd.radii differ by up to {diff.max().item()}"
    assert (diff > 0).float().mean() <= RADIUS_MISMATCH_FRACTION, f"{(diff > 0).sum().item()} radii differ"
    assert torch.equal(dev[5].cpu() > 0, radii > 0), "project_fwd.radii: culling differs"
    assert (radii[..., 0] > 0).sum() > N // 2, "too few visible Gaussians for a meaningful test"
    assert (radii[..., 0] == 0).any(), "expected some culled Gaussians"

    # Backward on identical inputs (the CPU radii decide which items are visible).
    gen = torch.Generator().manual_seed(99)
    v = [torch.randn(B, N, 2, generator=gen), torch.randn(B, N, 3, generator=gen), torch.randn(B, N, generator=gen),
         torch.randn(B, N, 3, generator=gen), torch.randn(B, N, generator=gen)]
    names = ("v_means", "v_quats", "v_log_scales", "v_opacity_logits", "v_sh", "v_viewmats", "v_Ks")
    for want_camera in (False, True):
        g_cpu = ops.project_bwd(*gauss, viewmats, Ks, *args, radii, *v, want_camera)
        g_dev = ops.project_bwd(*to_dev(*gauss, viewmats, Ks), *args, *to_dev(radii, *v), want_camera)
        for name, d, c in zip(names if want_camera else names[:5], g_dev, g_cpu):
            assert_matches(f"project_bwd.{name} (camera={want_camera})", d, c, rtol=GRAD_RTOL)
        if want_camera:
            assert g_cpu[5].shape == (B, 4, 4) and torch.count_nonzero(g_cpu[5][:, :3]) > 0
        else:
            assert g_dev[5].numel() == 0 and g_dev[6].numel() == 0
        # SH coefficients above the degree get exactly zero gradient on both.
        k = (sh_degree + 1) ** 2
        assert torch.count_nonzero(g_dev[4][:, k:].cpu()) == 0


def projected_scene(ops, W: int, H: int, N: int, seed: int, dense: bool, B: int = 2):
    gauss = make_gaussians(N, W, H, seed=seed, dense=dense)
    viewmats, Ks = make_cameras(B, W, H)
    means2d, conics, opacities, colors, depths, radii = ops.project_fwd(
        *gauss, viewmats, Ks, *project_args(W, H, 3, False)
    )
    background = torch.rand(B, 3, generator=torch.Generator().manual_seed(seed + 1))
    return [means2d, conics, opacities, colors, depths, radii, background]


FWD_NAMES = ("image", "depth", "alpha", "final_T", "last", "tile_offsets", "flat_ids", "gauss_offsets",
             "gauss_entries", "importance")
BWD_NAMES = ("v_means2d", "v_conics", "v_opacities", "v_colors", "v_depths", "split2d")


def check_rasterize(ops, inputs, W: int, H: int, seed: int):
    """rasterize_fwd/bwd on CPU and DEVICE with the same inputs; returns the CPU results."""
    cpu = ops.rasterize_fwd(*inputs, W, H)
    dev = ops.rasterize_fwd(*to_dev(*inputs), W, H)
    for name, d, c in zip(FWD_NAMES, dev, cpu):
        if name in ("image", "alpha", "final_T"):
            assert_matches(f"rasterize_fwd.{name}", d, c, rtol=0.0, atol=FWD_ATOL)
        else:  # depth, importance (floats with a scale); bins and `last` exactly
            assert_matches(f"rasterize_fwd.{name}", d, c, rtol=FWD_RTOL, atol=FWD_ATOL)

    B = inputs[0].shape[0]
    gen = torch.Generator().manual_seed(seed + 7)
    v = [torch.randn(B, H, W, 3, generator=gen), torch.randn(B, H, W, 1, generator=gen),
         torch.randn(B, H, W, 1, generator=gen)]
    means2d, conics, opacities, colors, depths, radii, background = inputs
    for want_split2d in (False, True):
        g_cpu = ops.rasterize_bwd(means2d, conics, opacities, colors, depths, background, W, H,
                                  *cpu[3:9], *v, want_split2d)
        g_dev = ops.rasterize_bwd(*to_dev(means2d, conics, opacities, colors, depths, background), W, H,
                                  *dev[3:9], *to_dev(*v), want_split2d)
        for name, d, c in zip(BWD_NAMES, g_dev, g_cpu):
            assert_matches(f"rasterize_bwd.{name} (split2d={want_split2d})", d, c, rtol=GRAD_RTOL)
        if not want_split2d:
            assert torch.count_nonzero(g_dev[5].cpu()) == 0
        elif cpu[6].numel() > 0:
            assert torch.count_nonzero(g_cpu[5]) > 0
    return cpu


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("size", [(64, 48), (37, 29)], ids=["64x48", "37x29"])
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_rasterize_matches_cpu(ops, size: tuple[int, int], dense: bool) -> None:
    W, H = size
    N = 800 if dense else 300
    seed = 1000 + W + (1 if dense else 0)
    inputs = projected_scene(ops, W, H, N, seed, dense)
    cpu = check_rasterize(ops, inputs, W, H, seed)
    tile_offsets, final_T = cpu[5], cpu[3]
    assert cpu[6].numel() > 0, "no tile entries: the scene tests nothing"
    if dense:  # the scene must exercise several shared-memory batches and early stopping
        assert tile_offsets.diff().max() > 256
        assert (final_T < 1e-2).any()


@pytest.mark.gpu
@requires_gpu
def test_rasterize_without_entries(ops) -> None:
    """N == 0 and all Gaussians culled (M == 0): background images, zero gradients."""
    W, H = 37, 29
    for N, behind in ((0, 0.0), (50, 1.0)):
        gauss = make_gaussians(N, W, H, seed=5, behind=behind)
        viewmats, Ks = make_cameras(2, W, H)
        args = project_args(W, H, 1, True)
        proj_cpu = ops.project_fwd(*gauss, viewmats, Ks, *args)
        proj_dev = ops.project_fwd(*to_dev(*gauss, viewmats, Ks), *args)
        for d, c in zip(proj_dev, proj_cpu):
            assert_matches("project_fwd (empty)", d, c, rtol=FWD_RTOL)
        background = torch.rand(2, 3)
        inputs = [*proj_cpu, background]
        cpu = check_rasterize(ops, inputs, W, H, seed=5)
        assert cpu[6].numel() == 0
        torch.testing.assert_close(cpu[0], background[:, None, None, :].expand(2, H, W, 3))
        v = [torch.zeros(2, N, 2), torch.zeros(2, N, 3), torch.zeros(2, N), torch.zeros(2, N, 3), torch.zeros(2, N)]
        g_dev = ops.project_bwd(*to_dev(*gauss, viewmats, Ks), *args, *to_dev(proj_cpu[5], *v))
        for g in g_dev:
            assert torch.count_nonzero(g.cpu()) == 0


def make_samples(R: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 40, (R,), generator=g)
    counts[:5] = 0  # some empty rays
    offsets = torch.zeros(R + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    M = int(offsets[-1])
    alphas = torch.rand(M, generator=g) * 0.6
    pick = torch.rand(M, generator=g)
    alphas[pick < 0.1] = 0.995  # clamped to kAlphaMax
    alphas[(pick >= 0.1) & (pick < 0.2)] = 0.002  # below kAlphaMin: skipped
    colors = torch.rand(M, 3, generator=g)
    ts = torch.cat([torch.cumsum(0.05 + torch.rand(int(n), generator=g), 0) for n in counts])
    background = torch.rand(R, 3, generator=g)
    return [offsets, alphas.contiguous(), colors, ts.contiguous(), background]


@pytest.mark.gpu
@requires_gpu
def test_composite_matches_cpu(ops) -> None:
    R = 500
    inputs = make_samples(R, seed=3)
    cpu = ops.composite_fwd(*inputs)
    dev = ops.composite_fwd(*to_dev(*inputs))
    for name, d, c in zip(("rgb", "depth", "alpha", "final_T", "last"), dev, cpu):
        assert_matches(f"composite_fwd.{name}", d, c, rtol=FWD_RTOL, atol=FWD_ATOL)
    offsets, last = inputs[0], cpu[4]
    assert (last < offsets[1:]).any(), "expected rays that stop early"

    gen = torch.Generator().manual_seed(4)
    v = [torch.randn(R, 3, generator=gen), torch.randn(R, generator=gen), torch.randn(R, generator=gen)]
    g_cpu = ops.composite_bwd(*inputs, cpu[3], cpu[4], *v)
    g_dev = ops.composite_bwd(*to_dev(*inputs), dev[3], dev[4], *to_dev(*v))
    for name, d, c in zip(("v_alphas", "v_colors", "v_ts"), g_dev, g_cpu):
        assert_matches(f"composite_bwd.{name}", d, c, rtol=GRAD_RTOL)


@pytest.mark.gpu
@requires_gpu
def test_composite_without_samples(ops) -> None:
    for R in (0, 4):
        offsets = torch.zeros(R + 1, dtype=torch.long)
        empty = torch.zeros(0)
        inputs = [offsets, empty, torch.zeros(0, 3), empty, torch.rand(R, 3)]
        cpu = ops.composite_fwd(*inputs)
        dev = ops.composite_fwd(*to_dev(*inputs))
        for d, c in zip(dev, cpu):
            assert_matches("composite_fwd (empty)", d, c, rtol=0.0)
        v = [torch.rand(R, 3), torch.rand(R), torch.rand(R)]
        g_dev = ops.composite_bwd(*to_dev(*inputs), dev[3], dev[4], *to_dev(*v))
        assert [tuple(g.shape) for g in g_dev] == [(0,), (0, 3), (0,)]
