"""Activation checkpointing per ConvNeXt stage: same loss, gradients and BN statistics as without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bindense.models import build_model


def _step(checkpoint_stages: list[int], saved_activation: str = "exact"):
    torch.manual_seed(0)
    model = build_model(
        "upernet", "convnext", "nano", "bidense", ["seg"], num_classes=4,
        checkpoint_stages=checkpoint_stages, saved_activation=saved_activation,
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
