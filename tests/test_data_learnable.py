"""The synthetic scenes are learnable: a tiny CNN trained briefly clearly beats chance (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bindense.data import DenseDataModule, write_synthetic
from bindense.data.scene import NUM_CLASSES


def _block(i: int, o: int, s: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class _TinySegDepth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleList([_block(3, 32, 2), _block(32, 64, 2), _block(64, 96, 2), _block(96, 128, 2)])
        self.fuse = _block(32 + 64 + 96 + 128, 64, 1)
        self.seg, self.depth = nn.Conv2d(64, NUM_CLASSES, 1), nn.Conv2d(64, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, f = [], x
        for layer in self.enc:
            f = layer(f)
            feats.append(f)
        size = feats[0].shape[-2:]
        f = self.fuse(torch.cat([F.interpolate(t, size=size, mode="bilinear") for t in feats], 1))
        f = F.interpolate(f, size=x.shape[-2:], mode="bilinear")
        return self.seg(f), 10 * torch.sigmoid(self.depth(f))


@pytest.mark.slow
def test_tiny_model_beats_chance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    root = write_synthetic(tmp_path / "syn", "nyud_mt", num_train=200, num_val=40, seed=0, height=64, width=80)
    dm = DenseDataModule("synthetic", str(root), "nyud_mt", ["seg", "depth"], num_classes=NUM_CLASSES,
                         batch_size=16, num_workers=0, crop_size=[64, 80], train_aug={"hflip": 0.5})  # fmt: skip
    net = _TinySegDepth()
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    for _ in range(8):
        for b in dm.train_dataloader():
            seg, depth = net(b["image"])
            valid = b["depth"] > 0
            loss = F.cross_entropy(seg, b["seg"], ignore_index=255)
            loss = loss + (depth[valid].log() - b["depth"][valid].log()).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    conf = torch.zeros(NUM_CLASSES, NUM_CLASSES)
    rel, rel_mean = [], []
    with torch.no_grad():
        for b in dm.val_dataloader():
            seg, depth = net(b["image"])
            gt, keep = b["seg"], b["seg"] != 255
            conf += torch.bincount(gt[keep] * NUM_CLASSES + seg.argmax(1)[keep], minlength=NUM_CLASSES**2).view(
                NUM_CLASSES, NUM_CLASSES
            )
            v = b["depth"] > 0
            rel.append(((depth - b["depth"]).abs() / b["depth"])[v].mean())
            rel_mean.append(((b["depth"][v].mean() - b["depth"]).abs() / b["depth"])[v].mean())
    pix_acc = conf.diag().sum() / conf.sum()
    majority = conf.sum(1).max() / conf.sum()
    present = conf.sum(1) > 0
    miou = (conf.diag() / (conf.sum(0) + conf.sum(1) - conf.diag()).clamp(min=1))[present].mean()
    assert pix_acc > majority + 0.2, (pix_acc, majority)
    assert miou > 2.5 / NUM_CLASSES, miou
    assert torch.stack(rel).mean() < 0.75 * torch.stack(rel_mean).mean()
