"""The multi-task DeepLabV3: shapes, strides, dilation schedule, parameter counts, BN with batch 1, weights."""

import logging

import pytest
import torch
import torchvision
from torch import nn

from data.labels import NUM_CLASSES
from engine.config import Config, ModelConfig
from losses import build_weighting
from models import BACKBONES, build_model
from models.aspp import ASPP, PooledBatchNorm, aspp_rates
from models.resnet import build_backbone, load_backbone_weights

torch.set_num_threads(1)

# Small ASPP/head widths keep the tests fast; the backbone itself is always the full network.
SMALL = dict(aspp_channels=8, head_channels=8)
OUT_CHANNELS = {"semantic": NUM_CLASSES, "instance": 2, "depth": 1}


def small_cfg(backbone="resnet18", output_stride=8, tasks=("semantic", "instance", "depth"), **model) -> Config:
    return Config(tasks=tasks, model=ModelConfig(backbone=backbone, output_stride=output_stride, **{**SMALL, **model}))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_output_shapes_and_feature_stride(backbone, output_stride):
    torch.manual_seed(0)
    model = build_model(small_cfg(backbone, output_stride)).eval()
    image = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        features = model.backbone(image)
        out = model(image)
    assert features.shape == (1, model.backbone.out_channels, 32 // output_stride, 64 // output_stride)
    assert model.backbone.out_channels == (512 if backbone in ("resnet18", "resnet34") else 2048)
    assert list(out) == ["semantic", "instance", "depth"]
    for task, y in out.items():
        assert y.shape == (1, OUT_CHANNELS[task], 32, 64) and y.dtype == torch.float32
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_parameter_count_equals_torchvision_minus_fc(backbone):
    ours = build_backbone(backbone, 8)
    ref = getattr(torchvision.models, backbone)()  # random init, nothing downloaded
    assert n_params(ours) == n_params(ref) - n_params(ref.fc)
    # Same names and shapes too, so torchvision state dicts load unchanged.
    ref_state = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref_state


def _dilations(layer: nn.Sequential) -> list[tuple[int, int]]:
    """(stride, dilation) of each 3x3 conv of a stage, in order."""
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    return [(m.stride[0], m.dilation[0]) for m in convs]


def test_basicblock_dilation_schedule_follows_torchvision():
    # torchvision's _make_layer: first block of a dilated stage keeps the previous dilation.
    r18 = build_backbone("resnet18", 8)
    assert _dilations(r18.layer2) == [(2, 1), (1, 1), (1, 1), (1, 1)]
    assert _dilations(r18.layer3) == [(1, 1), (1, 1), (1, 2), (1, 2)]
    assert _dilations(r18.layer4) == [(1, 2), (1, 2), (1, 4), (1, 4)]
    r18 = build_backbone("resnet18", 16)
    assert _dilations(r18.layer3) == [(2, 1), (1, 1), (1, 1), (1, 1)]
    assert _dilations(r18.layer4) == [(1, 1), (1, 1), (1, 2), (1, 2)]
    # The same per-block schedule as torchvision's own dilated Bottleneck network.
    r50 = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    assert [b.conv2.dilation[0] for b in r50.layer4] == [2, 4, 4]
    assert [b.conv2.dilation[0] for b in build_backbone("resnet50", 8).layer4] == [2, 4, 4]
    for conv in r18.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            assert conv.padding == conv.dilation  # size preserved


def test_undilated_backbone_is_exactly_torchvision():
    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    ours = build_backbone("resnet18", 32).eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = nn.Sequential(*list(ref.children())[:-2])(x)  # up to layer4
        assert torch.equal(ours(x), expected)


def test_aspp_branches_rates_and_width():
    assert aspp_rates((12, 24, 36), 8) == (12, 24, 36)
    assert aspp_rates((12, 24, 36), 16) == (6, 12, 18)
    model = build_model(small_cfg(output_stride=16, aspp_channels=256, head_channels=256))
    assert model.aspp.out_channels == 1280  # 5 x 256, no projection
    assert [b[0].dilation[0] for b in model.aspp.branches[1:4]] == [6, 12, 18]
    assert model.aspp.branches[0][0].kernel_size == (1, 1)
    assert model.heads["semantic"].conv.in_channels == 1280
    assert model.heads["semantic"].conv.kernel_size == (3, 3)
    projected = build_model(small_cfg(aspp_projection=True, head_kernel=1))
    assert projected.aspp.out_channels == 8
    assert projected.heads["depth"].conv.in_channels == 8
    assert projected.heads["depth"].conv.kernel_size == (1, 1)


def test_only_configured_tasks_are_built():
    model = build_model(small_cfg(tasks=("depth", "semantic")))
    assert list(model.heads) == ["semantic", "depth"]  # canonical order
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert sorted(out) == ["depth", "semantic"]
    assert not any(name.startswith("heads.instance") for name, _ in model.named_parameters())
    single = build_model(small_cfg(tasks=("instance",)))
    assert list(single(torch.randn(2, 3, 32, 32))) == ["instance"]


def test_model_owns_no_weighting_parameter():
    model = build_model(small_cfg())
    weighting = build_weighting("uncertainty", {"semantic": "classification", "depth": "regression"})
    model_params = {id(p) for p in model.parameters()}
    assert not any(id(p) in model_params for p in weighting.parameters())
    assert not any("log_var" in name for name, _ in model.named_parameters())
    # Every model parameter is either shared (encoder) or in exactly one head.
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.heads.parameters()}
    assert shared | heads == model_params and not shared & heads


def test_batch_of_one_trains():
    torch.manual_seed(0)
    model = build_model(small_cfg()).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pooled_bn = model.aspp.branches[-1].bn
    before = pooled_bn.weight.detach().clone()
    out = model(torch.randn(1, 3, 32, 32))  # torchvision's DeepLabV3 raises here
    loss = sum(y.square().mean() for y in out.values())
    loss.backward()
    assert pooled_bn.weight.grad is not None and pooled_bn.weight.grad.abs().sum() > 0
    assert model.aspp.branches[-1].conv.weight.grad.abs().sum() > 0  # gradient reaches through the BN
    opt.step()
    assert not torch.equal(pooled_bn.weight, before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_pooled_batchnorm_is_plain_bn_for_batches_and_eval_stats_for_one_image():
    torch.manual_seed(0)
    ours, plain = PooledBatchNorm(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        for bn in (ours, plain):
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
            bn.bias.copy_(torch.tensor([0.1, 0.0, -0.2, 0.3]))
    x = torch.randn(3, 4, 1, 1) * 2 + 1
    # Batch > 1: exactly nn.BatchNorm2d, output and running statistics.
    assert torch.equal(ours.train()(x), plain.train()(x))
    assert torch.equal(ours.running_mean, plain.running_mean) and torch.equal(ours.running_var, plain.running_var)
    assert ours.num_batches_tracked == 1
    # Batch of 1 in training: the running statistics normalise, and are not updated.
    mean, var = ours.running_mean.clone(), ours.running_var.clone()
    one = x[:1]
    expected = (one - mean.view(1, 4, 1, 1)) / torch.sqrt(var.view(1, 4, 1, 1) + ours.eps)
    expected = expected * ours.weight.view(1, 4, 1, 1) + ours.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(ours.train()(one), expected)
    torch.testing.assert_close(ours.eval()(one), expected)  # same as at test time
    assert torch.equal(ours.running_mean, mean) and torch.equal(ours.running_var, var)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        plain.train()(one)


def test_aspp_pooling_branch_is_global_average():
    torch.manual_seed(0)
    aspp = ASPP(4, channels=3, rates=(1, 2, 3)).eval()
    x = torch.randn(2, 4, 5, 6)
    y = aspp(x)
    assert y.shape == (2, 15, 5, 6)
    pooled = y[:, 12:]  # the image-pooling branch is constant over the map
    assert torch.equal(pooled, pooled[:, :, :1, :1].expand_as(pooled))
    branch = aspp.branches[-1]
    expected = branch.relu(branch.bn(branch.conv(x.mean(dim=(2, 3), keepdim=True))))
    torch.testing.assert_close(pooled[:, :, 2, 3], expected[:, :, 0, 0])


def test_backbone_weights_round_trip(tmp_path, caplog):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18()  # random init stands in for ImageNet weights
    with torch.no_grad():  # non-trivial BN statistics so buffers are checked too
        ref.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="models.resnet"):
        model = build_model(small_cfg(backbone_weights=str(path)))
    ours = model.backbone.state_dict()
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(ours[k], v), k
    assert "missing" not in caplog.text and "unexpected" not in caplog.text  # fc.* ignored quietly

    # Missing and unexpected keys are returned and logged.
    state = {k: v for k, v in ref.state_dict().items() if k != "layer4.1.bn2.bias"}
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models.resnet"):
        missing, unexpected = load_backbone_weights(build_backbone("resnet18"), path)
    assert missing == ["layer4.1.bn2.bias"] and unexpected == ["extra.weight"]
    assert "layer4.1.bn2.bias" in caplog.text and "extra.weight" in caplog.text


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.pth"):
        build_model(small_cfg(backbone_weights=str(tmp_path / "no-such.pth")))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_backbone_weights(build_backbone("resnet18"), bad)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.w": torch.zeros(2)}, unrelated)
    with pytest.raises(ValueError, match="no key of .*unrelated.pth matches"):
        load_backbone_weights(build_backbone("resnet18"), unrelated)
    deeper = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), deeper)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_backbone_weights(build_backbone("resnet18"), deeper)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet101.*resnet18.*resnet34.*resnet50"):
        build_backbone("resnet152")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet18", 4)
