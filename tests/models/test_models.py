"""The NonLocal segmentor: MMSeg's keys/shapes/counts, the ResNetV1c-D8 geometry, SDPA vs the
explicit attention, no N x N buffer in the default path, MMSeg's init and loss semantics."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmark.models.nonlocal_block import NonLocal2d
from benchmark.models.resnet import Bottleneck, ResNetV1c
from benchmark.models.segmentor import build_segmentor
from benchmark.recipe import load_recipe

R50 = "nonlocal_r50-d8_4xb2-40k_cityscapes-512x1024"
R101 = "nonlocal_r101-d8_4xb2-40k_cityscapes-512x1024"


@pytest.fixture(scope="module")
def r50_state():
    return build_segmentor(load_recipe(R50).model).state_dict()


@pytest.fixture(scope="module")
def smoke_model():
    torch.manual_seed(0)
    return build_segmentor(load_recipe(R50, profile="smoke").model)


def test_r50_d8_state_dict_matches_mmseg_facts(r50_state):
    # docs/FIDELITY.md: R-50-D8 with 19 classes = 370 keys, 50,081,730 elements.
    assert len(r50_state) == 370
    assert sum(v.numel() for v in r50_state.values()) == 50_081_730
    expected_shapes = {
        "backbone.stem.0.weight": (32, 3, 3, 3),
        "backbone.stem.1.running_var": (32,),
        "backbone.stem.3.weight": (32, 32, 3, 3),
        "backbone.stem.4.num_batches_tracked": (),
        "backbone.stem.6.weight": (64, 32, 3, 3),
        "backbone.stem.7.bias": (64,),
        "backbone.layer1.0.conv1.weight": (64, 64, 1, 1),
        "backbone.layer1.0.bn1.weight": (64,),
        "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.layer1.0.downsample.1.running_mean": (256,),
        "backbone.layer2.0.conv2.weight": (128, 128, 3, 3),
        "backbone.layer3.5.conv3.weight": (1024, 256, 1, 1),
        "backbone.layer4.2.bn3.weight": (2048,),
        "decode_head.convs.0.conv.weight": (512, 2048, 3, 3),
        "decode_head.convs.0.bn.weight": (512,),
        "decode_head.convs.1.conv.weight": (512, 512, 3, 3),
        "decode_head.conv_cat.conv.weight": (512, 2560, 3, 3),
        "decode_head.nl_block.g.conv.weight": (256, 512, 1, 1),
        "decode_head.nl_block.g.conv.bias": (256,),
        "decode_head.nl_block.theta.conv.bias": (256,),
        "decode_head.nl_block.phi.conv.weight": (256, 512, 1, 1),
        "decode_head.nl_block.conv_out.conv.weight": (512, 256, 1, 1),
        "decode_head.nl_block.conv_out.bn.running_var": (512,),
        "decode_head.conv_seg.weight": (19, 512, 1, 1),
        "decode_head.conv_seg.bias": (19,),
        "auxiliary_head.convs.0.conv.weight": (256, 1024, 3, 3),
        "auxiliary_head.convs.0.bn.bias": (256,),
        "auxiliary_head.conv_seg.weight": (19, 256, 1, 1),
    }
    for key, shape in expected_shapes.items():
        assert tuple(r50_state[key].shape) == shape, key
    # Convs followed by a norm have no bias (ConvModule's bias="auto"), so no such keys exist.
    assert "decode_head.nl_block.conv_out.conv.bias" not in r50_state
    assert "decode_head.convs.0.conv.bias" not in r50_state
    prefixes = {k.split(".")[0] for k in r50_state}
    assert prefixes == {"backbone", "decode_head", "auxiliary_head"}


def test_r101_d8_state_dict_matches_facts():
    model = build_segmentor(load_recipe(R101).model)
    state = model.state_dict()
    # R-101 has 23 instead of 6 bottlenecks in stage 3: 17 more blocks of 3 convs + 3 BNs (5 keys).
    assert len(state) == 370 + 17 * (3 + 3 * 5)
    assert "backbone.layer3.22.bn3.running_mean" in state and "backbone.layer3.23.conv1.weight" not in state
    # Facts: 69.0 M parameters (50.0 M for R-50); the element count was checked against MMSeg's own
    # model by tests/test_parity_mmseg.py (676 keys, 69,126,133 elements).
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 69.0
    assert sum(v.numel() for v in state.values()) == 69_126_133


def test_d8_geometry_strides_and_dilations():
    backbone = ResNetV1c(50).eval()
    with torch.no_grad():
        outs = backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 8, 12), (1, 2048, 8, 12)]
    # "pytorch" style: the stride is on the 3x3 conv; contract_dilation halves the first block's.
    assert backbone.layer2[0].conv2.stride == (2, 2) and backbone.layer2[0].conv1.stride == (1, 1)
    assert [b.conv2.dilation[0] for b in backbone.layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in backbone.layer4] == [2, 4, 4]
    assert [b.conv2.padding[0] for b in backbone.layer4] == [2, 4, 4]
    assert backbone.layer3[0].downsample[0].stride == (1, 1)


@torch.no_grad()
def test_mmseg_init(smoke_model):
    r50 = build_segmentor(load_recipe(R50).model)
    blocks = [m for m in r50.backbone.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in blocks)  # zero_init_residual
    assert all(float(b.bn1.weight.detach().min()) == 1 and float(b.bn2.weight.detach().min()) == 1 for b in blocks)
    nl = r50.decode_head.nl_block
    assert float(nl.conv_out.bn.weight.abs().sum()) == 0 and float(nl.conv_out.bn.bias.abs().sum()) == 0
    assert float(nl.g.conv.weight.std()) == pytest.approx(0.01, rel=0.05)
    assert float(nl.g.conv.bias.abs().sum()) == 0
    assert float(r50.decode_head.conv_seg.weight.std()) == pytest.approx(0.01, rel=0.05)
    w = r50.decode_head.convs[0].conv.weight  # Kaiming normal, fan_out, ReLU gain
    assert float(w.std()) == pytest.approx((2.0 / (w.shape[0] * 9)) ** 0.5, rel=0.05)
    # At init the non-local block is the identity.
    x = torch.randn(1, 512, 4, 5)
    with torch.no_grad():
        assert torch.equal(nl.eval()(x), x)


def _perturbed_block(mode: str, use_scale: bool) -> NonLocal2d:
    torch.manual_seed(0)
    block = NonLocal2d(32, reduction=2, use_scale=use_scale, mode=mode, impl="sdpa")
    with torch.no_grad():
        for conv in (block.g.conv, block.theta.conv, block.phi.conv):
            conv.weight.normal_(0, 0.15)  # far from the 0.01 init, so attention is not uniform
            conv.bias.normal_(0, 0.1)
        bn = block.conv_out.bn  # the zero init would hide the whole branch
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.1)
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return block.eval()


@pytest.mark.parametrize("mode,use_scale", [("embedded_gaussian", True), ("embedded_gaussian", False),
                                            ("dot_product", True)])
def test_sdpa_and_explicit_agree_in_outputs_and_gradients(mode, use_scale):
    sdpa = _perturbed_block(mode, use_scale)
    explicit = copy.deepcopy(sdpa)
    explicit.impl = "explicit"
    x = torch.randn(2, 32, 7, 9)
    results = []
    for block in (sdpa, explicit):
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [xi.grad] + [p.grad for p in block.parameters()]
        results.append((out.detach(), grads))
    (out_s, grads_s), (out_e, grads_e) = results
    assert (out_s - x).abs().max() > 1e-2  # the branch really contributes
    # Agreement to 1e-5 of each tensor's scale (absolute for tensors of magnitude <= 1): outputs
    # here reach ~10 and weight gradients ~300, so a bare atol would only test float rounding.
    for a, b in zip([out_s] + grads_s, [out_e] + grads_e):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))


def test_use_scale_false_means_no_scaling():
    scaled, unscaled = _perturbed_block("embedded_gaussian", True), _perturbed_block("embedded_gaussian", False)
    q = torch.randn(1, 5, 16)
    k, v = torch.randn(1, 6, 16), torch.randn(1, 6, 16)
    ref = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
    torch.testing.assert_close(unscaled.attend(q, k, v), ref, atol=1e-6, rtol=1e-5)
    ref_scaled = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1) @ v  # 1/sqrt(16)
    torch.testing.assert_close(scaled.attend(q, k, v), ref_scaled, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["embedded_gaussian", "dot_product"])
def test_default_path_never_allocates_the_attention_matrix(mode):
    block = NonLocal2d(16, mode=mode).eval()  # impl="sdpa"
    x = torch.randn(1, 16, 64, 64)
    n = 64 * 64
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        block(x)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest < n * n * 4 // 8, f"an allocation of {largest} bytes (the matrix is {n * n * 4})"
    # ...whereas the reference path does build it, which shows the measurement sees it.
    block.impl = "explicit"
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        block(x)
    assert max(e.cpu_memory_usage for e in prof.events()) >= n * n * 4


def test_forward_returns_logits_at_input_size_and_channels_last_agrees(smoke_model):
    model = smoke_model.eval()
    x = torch.randn(1, 3, 37, 61)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 19, 37, 61)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out_cl = cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, out, atol=1e-4, rtol=1e-4)


def test_losses_follow_mmseg_semantics(smoke_model):
    model = smoke_model.eval()  # eval: dropout off, so the expected value is computable
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 48)
    label = torch.randint(0, 19, (2, 32, 48))
    label[:, :8] = 255  # a quarter of the pixels ignored
    with torch.no_grad():
        losses = model.losses(x, label)
        feats = model.backbone(x)

        def expected(head, index):
            logits = F.interpolate(head(feats[index]), size=(32, 48), mode="bilinear", align_corners=False)
            per_pixel = F.cross_entropy(logits, label, ignore_index=255, reduction="none")
            # avg_non_ignore=False: divide by all pixels, ignored ones included
            return per_pixel.sum() / label.numel(), F.cross_entropy(logits, label, ignore_index=255)

        dec, dec_torch_mean = expected(model.decode_head, 3)
        aux, _ = expected(model.auxiliary_head, 2)
    assert float(losses["loss_decode"]) == pytest.approx(float(dec), rel=1e-6)
    assert float(losses["loss_aux"]) == pytest.approx(0.4 * float(aux), rel=1e-6)
    assert float(losses["loss"]) == pytest.approx(float(dec) + 0.4 * float(aux), rel=1e-6)
    # ...which is not PyTorch's default mean over the labelled pixels only.
    assert float(dec_torch_mean) == pytest.approx(float(dec) * 4 / 3, rel=1e-5)


def test_losses_backpropagate_to_every_parameter(smoke_model):
    model = copy.deepcopy(smoke_model).train()
    x = torch.randn(2, 3, 32, 32)
    label = torch.randint(0, 19, (2, 32, 32))
    model.losses(x, label)["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_sync_bn_conversion_keeps_keys(smoke_model):
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(smoke_model))
    assert list(converted.state_dict()) == list(smoke_model.state_dict())


def test_resnet34_d8_is_the_deeper_basic_block_trunk():
    small, deeper = ResNetV1c(18).eval(), ResNetV1c(34).eval()
    assert [len(getattr(deeper, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert [len(getattr(small, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert deeper.out_channels == small.out_channels == (64, 128, 256, 512)
    with torch.no_grad():
        outs = deeper(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (8, 12), (8, 12)]  # D8 as the others
    # As in MMSeg, a basic block dilates only its first conv; contract_dilation halves the first block's.
    assert [b.conv1.dilation[0] for b in deeper.layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv1.dilation[0] for b in deeper.layer4] == [2, 4, 4]
    assert all(b.conv2.dilation[0] == 1 for b in deeper.layer4)


def test_explicit_attention_is_mmcv_arithmetic_whole_or_in_row_blocks(monkeypatch):
    """The explicit path divides by sqrt(C') as mmcv does (C' = 12: not a power of 4, so a product
    with 1/sqrt(C') would round differently), and its row blocks, used without autograd above the
    size limit, give bit-identical results to the whole matrix."""
    from benchmark.models import nonlocal_block

    torch.manual_seed(0)
    block = NonLocal2d(24, reduction=2, impl="explicit")
    theta, phi, g = (torch.randn(2, 300, 12) * 4 for _ in range(3))
    reference = torch.matmul(theta, phi.transpose(1, 2))
    reference /= 12**0.5
    reference = torch.matmul(reference.softmax(dim=-1), g)
    with torch.no_grad():
        whole = block.attend(theta, phi, g)
        monkeypatch.setattr(nonlocal_block, "EXPLICIT_FULL_MATRIX_BYTES", 2 * 300 * 4 * 7)  # blocks of 7 rows
        blocks = block.attend(theta, phi, g)
    assert torch.equal(whole, reference) and torch.equal(blocks, whole)
    # With autograd the whole matrix is built (mmcv's backward), whatever the limit.
    theta.requires_grad_(True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        block.attend(theta, phi, g)
    assert max(e.cpu_memory_usage for e in prof.events()) >= 2 * 300 * 300 * 4
