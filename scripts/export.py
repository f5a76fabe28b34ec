"""Export a model to a bit-packed ``.bdn`` file (1-bit binary weights + scales, float32/float16 for the rest).

Usage::

    python scripts/export.py ckpt_path=<run>/checkpoints/last.ckpt out=model.bdn        # a trained checkpoint
    python scripts/export.py ckpt_path=... out=model.bdn float_dtype=float16            # fp entries as float16
    python scripts/export.py experiment=bidense_ade20k model.width=tiny out=model.bdn   # bare model (random init)

Keys: ``ckpt_path`` (Lightning checkpoint of this project; its config comes from the checkpoint or its run
directory, or ``config_path=``), ``out`` (default: next to the checkpoint, or ``model.bdn``), ``float_dtype``
(``float32`` | ``float16``), ``verify`` (default true: reload the file and compare eval outputs on a random
input), ``seed``. Every other ``key=value`` is a Hydra override of ``conf/train.yaml`` used when there is no
checkpoint. Prints the sizes (file vs float32 state_dict vs checkpoint) and, last, a JSON summary.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
KEYS = ("ckpt_path", "out", "float_dtype", "config_path", "verify", "seed")


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into this script's options and Hydra overrides."""
    options: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"export.py: expected key=value, got {arg!r}")
        if key in KEYS:
            options[key] = value
        else:
            overrides.append(arg)
    return options, overrides


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` (float32 latent weights), in bytes."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def model_from_overrides(overrides: Sequence[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    from hydra.utils import instantiate

    from bindense.utils.checkpoint import resolve_config
    from bindense.utils.compose import compose_config

    config = resolve_config(compose_config("train", overrides, hydra_node=False))
    return instantiate(config["model"], _convert_="all"), config


def _input_for(config: dict[str, Any]) -> torch.Tensor:
    """A small random image batch the model accepts (multiples of 32, or 28 for ViT patch models)."""
    multiple = 28 if "vit" in str((config.get("model") or {}).get("backbone", "")) else 32
    return torch.randn(1, 3, 2 * multiple, 3 * multiple)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bindense.export import export_packed, load_packed
    from bindense.utils.checkpoint import load_checkpoint_model

    options, overrides = parse(sys.argv[1:] if argv is None else argv)
    torch.manual_seed(int(options.get("seed", 0)))
    ckpt = options.get("ckpt_path")
    if ckpt:
        if overrides:
            print(f"export.py: ignoring overrides {overrides}: the checkpoint's own config is used")
        model, config = load_checkpoint_model(ckpt, options.get("config_path"))
        default_out = Path(ckpt).with_suffix(".bdn")
        source = {"ckpt_path": str(Path(ckpt).resolve())}
    else:
        model, config = model_from_overrides(overrides)
        default_out = Path("model.bdn")
        source = {"overrides": overrides, "note": "randomly initialised (no checkpoint)"}
    model.eval()
    out = Path(options.get("out") or default_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    float_dtype = options.get("float_dtype", "float32")
    info = export_packed(model, out, config=config, float_dtype=float_dtype, metadata=source)
    summary: dict[str, Any] = {
        "out": str(out),
        "bdn_bytes": info["bytes"],
        "float32_state_dict_bytes": state_dict_bytes(model),
        "binary_weights": info["binary_weights"],
        "binary_elements": info["binary_elements"],
        "float_elements": info["float_elements"],
        "float_dtype": float_dtype,
    }
    summary["ratio_vs_state_dict"] = round(summary["float32_state_dict_bytes"] / info["bytes"], 2)
    if ckpt:
        summary["checkpoint_bytes"] = Path(ckpt).stat().st_size
        summary["ratio_vs_checkpoint"] = round(summary["checkpoint_bytes"] / info["bytes"], 2)
    if options.get("verify", "true").lower() in ("1", "true", "yes"):
        x = _input_for(config)
        loaded = load_packed(out)
        with torch.no_grad():
            a, b = model(x), loaded(x)
        a = a if isinstance(a, dict) else {"out": a}
        b = b if isinstance(b, dict) else {"out": b}
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        summary["verify_max_abs_diff"] = diff
        summary["verify_identical"] = all(torch.equal(a[k], b[k]) for k in a)
    mib = 2**20
    print(
        f"wrote {out}: {info['bytes'] / mib:.2f} MiB ({info['binary_weights']} binary weight tensors, "
        f"{info['binary_elements']:,} binary + {info['float_elements']:,} {float_dtype} elements)"
    )
    print(
        f"float32 state_dict: {summary['float32_state_dict_bytes'] / mib:.2f} MiB "
        f"-> {summary['ratio_vs_state_dict']}x smaller"
    )
    if ckpt:
        ckpt_mib = summary["checkpoint_bytes"] / mib
        print(f"checkpoint file: {ckpt_mib:.2f} MiB -> {summary['ratio_vs_checkpoint']}x smaller")
    if "verify_identical" in summary:
        state = "identical" if summary["verify_identical"] else f"max |diff| {summary['verify_max_abs_diff']:.3e}"
        print(f"reloaded with bindense.export.load_packed: eval outputs {state}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
