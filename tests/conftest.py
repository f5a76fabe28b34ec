"""Test-wide settings and shared fixtures. Idle OpenMP threads sleep instead of spinning (a spinning pool slows CPU
tests many-fold whenever another process shares the cores); set before torch is imported by any test module."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: the tiny models of the tests run faster without OpenMP overhead."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _synthetic_batch(split: str, count: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic scenes normalised as in training: images [N, 3, H, W] and labels [N, H, W]."""
    import numpy as np  # noqa: PLC0415

    from bindense.data.render import generate_sample  # noqa: PLC0415

    samples = [generate_sample(0, split, i, height, width) for i in range(count)]
    images = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2).float() / 255.0
    return ((images - 0.45) / 0.25).contiguous(), torch.from_numpy(np.stack([s["seg"] for s in samples])).long()


@pytest.fixture
def trained_native_agreement(tmp_path):
    """``check(config, height, width)``: train the config's model 40 steps on synthetic scenes, export it, and return
    the native runtime's arg-max agreement with the unpacked model and their max relative difference (val scenes)."""
    from torch import nn  # noqa: PLC0415

    from bindense.export import export_packed, load_packed  # noqa: PLC0415
    from bindense.models import build_model  # noqa: PLC0415

    def check(config: dict, height: int, width: int) -> tuple[float, float]:
        torch.manual_seed(0)
        model = build_model(**{k: v for k, v in config["model"].items() if k != "_target_"})
        images, labels = _synthetic_batch("train", 24, height, width)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        model.train()
        for step in range(40):
            idx = torch.arange(8) + (step * 8) % 24
            loss = nn.functional.cross_entropy(model(images[idx])["seg"], labels[idx], ignore_index=255)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        path = tmp_path / "trained.bdn"
        export_packed(model.eval(), path, config=config)
        reference, packed = load_packed(path), load_packed(path, runtime="native")
        val, _ = _synthetic_batch("val", 8, height, width)
        with torch.no_grad():
            want, got = reference(val)["seg"], packed(val)["seg"]
        agreement = (got.argmax(1) == want.argmax(1)).float().mean().item()
        return agreement, ((got - want).abs().max() / want.abs().max()).item()

    return check
