"""Per-epoch cost of the BNN diagnostics and W&B dashboard work against one default-run epoch.

    python scripts/diagnostics_overhead.py [--reps 3]

Builds the default run (BiDense, nano UperNet, synthetic scenes; Hydra defaults of conf/train.yaml) and times,
interleaved in one process with medians over ``--reps`` rounds: a training step (forward, backward, AdamW), two
val batches without and with the entropy / DAB hooks, and the epoch-end work (weight signs and flip ratios,
latent / threshold histograms as ``wandb.Histogram``, the 4 segmentation overlays as ``wandb.Image`` with masks).
The epoch estimate is ``train steps x step + val batches x val batch``; the ratio is the extra work over it.
W&B's own background process (writing media) is not counted. The LAST line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import wandb

from bindense.analysis.entropy import EntropyRecorder, activation_binarizers
from bindense.binary import DAB
from bindense.lit.dashboard import WandbDashboard
from bindense.lit.diagnostics import BNNDiagnostics, binary_weight_units, flip_ratios, weight_signs
from bindense.lit.pipeline import build_datamodule, build_module
from bindense.utils.compose import CONF_DIR, compose_config


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--data-dir", default=str(CONF_DIR.parent / "data"))
    args = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="diag_overhead_"))
    cfg = compose_config("train", [f"paths.data_dir={args.data_dir}", "data.num_workers=0", "logger=csv"], out)
    dm = build_datamodule(cfg)
    module = build_module(cfg)
    net = module.net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    train_batches = [b for _, b in zip(range(3), dm.train_dataloader())]
    val_batches = [b for _, b in zip(range(2), dm.val_dataloader())]
    diag, dash = BNNDiagnostics(), WandbDashboard()
    trainer = type("TrainerStandIn", (), {"datamodule": dm})

    def train_step(batch: dict) -> None:
        net.train()
        opt.zero_grad()
        loss = module.losses["seg"](net(batch["image"])["seg"], batch["seg"])
        loss.backward()
        opt.step()

    @torch.no_grad()
    def val(hooked: bool) -> None:
        net.eval()
        if not hooked:
            for b in val_batches:
                net(b["image"])
            return
        with EntropyRecorder(activation_binarizers(net), mode="after") as rec:
            handles = [m.register_forward_hook(diag._dab_hook) for m in net.modules() if isinstance(m, DAB)]
            for b in val_batches:
                net(b["image"])
            for h in handles:
                h.remove()
        [rec.stats[n].after().mean() for n in rec.order]
        [torch.cat(v) for v in diag._dab.values()]
        diag._dab.clear()

    def epoch_end() -> None:
        units = binary_weight_units(net)
        flip_ratios(weight_signs(units), weight_signs(units), diag.stage_depth)
        [wandb.Histogram(v.float().numpy(), num_bins=64) for v in diag._latent_histograms(net).values()]
        with torch.no_grad():
            outputs = module.forward_step(val_batches[0])[0]
        dash.prediction_images(trainer, module, outputs, val_batches[0])

    times: dict[str, list[float]] = {"step": [], "val2_plain": [], "val2_hooked": [], "epoch_end": []}
    for _ in range(args.reps):
        for b in train_batches:
            start = time.perf_counter()
            train_step(b)
            times["step"].append(time.perf_counter() - start)
        for key, fn in (
            ("val2_plain", lambda: val(False)),
            ("val2_hooked", lambda: val(True)),
            ("epoch_end", epoch_end),
        ):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    steps, n_val = len(dm.train_dataloader()), len(dm.val_dataloader())
    epoch = steps * med["step"] + n_val * med["val2_plain"] / len(val_batches)
    extra = max(0.0, med["val2_hooked"] - med["val2_plain"]) + med["epoch_end"]
    result = {
        "medians_s": {k: round(v, 4) for k, v in med.items()},
        "train_steps": steps,
        "val_batches": n_val,
        "epoch_s_est": round(epoch, 2),
        "diag_s_per_epoch": round(extra, 3),
        "ratio": round(extra / epoch, 4),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
