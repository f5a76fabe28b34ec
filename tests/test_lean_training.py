"""Training options of the lean step: activation checkpointing per ConvNeXt stage, channels-last feature maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bindense.models import build_model


def _step(checkpoint_stages: list[int], channels_last: bool = False):
    torch.manual_seed(0)
    model = build_model(
        "upernet", "convnext", "nano", "bidense", ["seg"], num_classes=4,
        checkpoint_stages=checkpoint_stages, channels_last=channels_last,
    )  # fmt: skip
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (2, 64, 64), generator=torch.Generator().manual_seed(2))
    loss = F.cross_entropy(model(x)["seg"], y)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return loss.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}


def test_checkpoint_stages_match_plain_training() -> None:
    loss, grads, buffers = _step([])
    loss_c, grads_c, buffers_c = _step([1, 2, 3, 4])
    assert torch.equal(loss, loss_c)
    for name, g in grads.items():
        assert grads_c[name] is not None, name
        torch.testing.assert_close(grads_c[name], g, rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    for name, b in buffers.items():  # the recomputation does not update the running statistics a second time
        assert torch.equal(buffers_c[name], b), name


def test_checkpoint_stages_validated() -> None:
    with pytest.raises(ValueError, match="checkpoint_stages"):
        build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=4, checkpoint_stages=[0])
    with pytest.raises(ValueError, match="checkpoint_stages"):
        build_model("dpt", "vit", "nano", "bidense", ["seg"], num_classes=4, checkpoint_stages=[1])
    with pytest.raises(ValueError, match="saved_activation"):
        build_model("upernet", "convnext", "nano", "bidense", ["seg"], num_classes=4, saved_activation="int4")


def test_channels_last_same_training_step() -> None:
    """NHWC feature maps change only the convolutions' summation order: same loss, and gradients equal up to
    rounding (which a sign can amplify in a binary net, hence a relative-norm comparison per parameter)."""
    loss, grads, _ = _step([])
    loss_c, grads_c, _ = _step([], channels_last=True)
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        if g.norm() > 1e-6:  # analytically zero gradients (a conv bias followed by BN) are rounding noise
            assert (grads_c[name] - g).norm() <= 1e-2 * g.norm(), name
