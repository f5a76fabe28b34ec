"""VIB layer: eval uses the mean, KL matches the closed form, the reparameterisation carries gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bindense.models import build_model
from bindense.models.vib import FeatureVIB, VariationalBottleneck, gaussian_kl, reparameterize

TINY = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], neck_channels=8, depth_hidden=8)


def test_kl_matches_numpy():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    m, lv = mu.numpy(), logvar.numpy()
    expected = np.mean(0.5 * (m**2 + np.exp(lv) - 1.0 - lv))
    assert float(gaussian_kl(mu, logvar)) == pytest.approx(expected, rel=1e-12)
    assert float(gaussian_kl(torch.zeros(3), torch.zeros(3))) == 0.0  # N(0, 1) vs itself


def test_reparameterisation_gradients_match_closed_form():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    z = reparameterize(mu, logvar, eps)
    m, lv = mu.detach().numpy(), logvar.detach().numpy()
    np.testing.assert_allclose(z.detach().numpy(), m + np.exp(0.5 * lv) * eps.numpy())
    (z * 3.0).sum().backward()
    np.testing.assert_allclose(mu.grad.numpy(), 3.0)
    np.testing.assert_allclose(logvar.grad.numpy(), 3.0 * 0.5 * np.exp(0.5 * lv) * eps.numpy())


@pytest.mark.parametrize("method", ["fp32", "bidense"])
def test_train_samples_eval_returns_mean(method):
    from bindense.models.spec import MethodSpec

    spec = MethodSpec.from_config(method)
    vib = VariationalBottleneck(6, conv=spec.conv, logvar_init=0.0)
    x = torch.randn(2, 6, 5, 5)
    vib.eval()
    mu, logvar = vib.stats(x)
    z1, z2 = vib(x), vib(x)
    assert torch.equal(z1, mu) and torch.equal(z1, z2)
    assert vib.last_kl is not None
    assert float(vib.last_kl.detach()) == pytest.approx(float(gaussian_kl(mu, logvar).detach()))
    vib.train()
    torch.manual_seed(0)
    a = vib(x)
    torch.manual_seed(1)
    b = vib(x)
    assert not torch.allclose(a, b)  # sigma = exp(0 / 2) = 1 at init: visible noise


def test_vib_gradients_reach_both_heads_in_training():
    vib = VariationalBottleneck(4).train()
    x = torch.randn(2, 4, 6, 6)
    z = vib(x)
    (z.pow(2).mean() + vib.last_kl).backward()
    for p in (*vib.mu_head.parameters(), *vib.logvar_head.parameters(), vib.logvar_scale, vib.logvar_bias):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_feature_vib_selects_stages_and_averages_kl():
    channels = {"stage1": 4, "stage2": 8}
    vib = FeatureVIB(channels, ["stage2"]).eval()
    feats = {"stage1": torch.randn(1, 4, 4, 4), "stage2": torch.randn(1, 8, 2, 2)}
    out = vib(feats)
    assert out["stage1"] is feats["stage1"]
    assert out["stage2"].shape == feats["stage2"].shape
    assert float(vib.last_kl.detach()) == pytest.approx(float(vib.layers["stage2"].last_kl.detach()))
    with pytest.raises(ValueError, match="stage9"):
        FeatureVIB(channels, ["stage9"])


def test_model_vib_kl_and_eval_determinism():
    model = build_model(
        "upernet",
        "convnext",
        "nano",
        "bidense",
        ["seg", "depth"],
        num_classes=3,
        max_depth=10.0,
        vib={"enabled": True, "stages": ["stage3", "stage4"]},
        **TINY,
        shared_decoder=False,
    )
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    out1, feats = model(x, return_features=True)
    out2 = model(x)
    assert torch.equal(out1["seg"], out2["seg"])
    assert set(k for k in feats if k.startswith("vib.")) == {"vib.stage3", "vib.stage4"}
    assert model.last_kl is not None and model.last_kl.ndim == 0 and float(model.last_kl.detach()) >= 0
    no_vib = build_model("upernet", "convnext", "nano", "fp32", ["seg"], num_classes=3, **TINY, shared_decoder=False)
    no_vib.eval()(x)
    assert no_vib.last_kl is None
