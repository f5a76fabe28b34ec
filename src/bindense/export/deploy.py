"""The ``--deploy`` benchmark: an exported model on the native runtime against its fp32 twin (docs/DEPLOY.md).

:func:`deploy_benchmark` exports a model to ``.bdn``, loads it with ``runtime="native"``, checks it against the
unpacked model (max relative difference, arg-max agreement of the first output) and times it against the fp32
twin (the same net with ``method.activation=fp32 method.weight=fp32``): runs alternate between the two so that
machine noise hits both alike, and medians are reported. :func:`layer_profile` times every binary unit of both
models with forward hooks (same module names), which shows where the time goes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bindense import native
from bindense.export.packed import export_packed, load_packed
from bindense.export.runtime import NativeBinaryConv2d, prepared_weight_bytes, resident_bytes
from bindense.export.runtime_dpt import NATIVE_TOKEN_UNITS, NativeAttention
from bindense.models.vit import Attention

MIB = 2**20
#: every native unit type of the runtime (convs; the ViT's linears and DPT's transposed convs)
NATIVE_UNITS = (NativeBinaryConv2d, *NATIVE_TOKEN_UNITS)
#: float blocks profiled next to the units (minus the units inside them), with their profile kind
FLOAT_BLOCKS: dict[type[nn.Module], str] = {
    Attention: "attention: q k^T, softmax, threshold, A v (float matmuls in both models; its linears excluded)",
    NativeAttention: "attention: q k^T, integer threshold, A v (float matmuls, no softmax; its linears excluded)",
}


def _first_output(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    return next(v for v in out.values() if isinstance(v, Tensor))


def perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move parameters and BN statistics away from their init, so that a random model behaves like a trained one
    for the accuracy check (init values such as DAB's a = k = 0 would make every scale 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.num_batches_tracked.fill_(3)
    return model.eval()


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(reference: nn.Module, packed: nn.Module, x: Tensor) -> dict[str, float]:
    """Whole model: max relative difference (max |diff| / max |reference|) and arg-max agreement over channels
    of the first output. Per unit (``unit_max_rel_diff``): each native unit fed the reference unit's own input
    during the same forward, so that sign flips upstream cannot hide or inflate a unit's error."""
    checked = (*NATIVE_UNITS, NativeAttention)
    units = {n.removeprefix("model."): m for n, m in packed.named_modules() if isinstance(m, checked)}
    worst = [0.0]

    def check(unit: NativeBinaryConv2d):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            got = unit(inputs[0].contiguous())
            output = unit.fused_activation(output)  # the activation after the unit, fused into it
            worst[0] = max(worst[0], float((got - output).abs().max() / output.abs().max().clamp_min(1e-12)))

        return hook

    hooks = [reference.get_submodule(n).register_forward_hook(check(u)) for n, u in units.items()]
    try:
        with torch.inference_mode():
            want = _first_output(reference(x))
    finally:
        for h in hooks:
            h.remove()
    with torch.inference_mode():
        got = _first_output(packed(x))
    return {
        "max_rel_diff": float((got - want).abs().max() / want.abs().max().clamp_min(1e-12)),
        "argmax_agreement": float((got.argmax(1) == want.argmax(1)).float().mean()),
        "unit_max_rel_diff": worst[0],
    }


def time_pair(packed: nn.Module, twin: nn.Module, x: Tensor, runs: int, warmup: int) -> dict[str, float]:
    """Median latency of both models, runs interleaved (packed, twin, packed, ...): wall time, and the process's
    CPU time (all threads), which on a shared machine excludes the waits for a core (at 1 thread: the compute)."""
    times: dict[str, list[float]] = {"packed": [], "twin": []}
    cpu: dict[str, list[float]] = {"packed": [], "twin": []}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for key, model in (("packed", packed), ("twin", twin)):
                c0 = time.process_time()
                t = _time(lambda m=model: m(x))
                if i >= warmup:
                    times[key].append(t)
                    cpu[key].append(time.process_time() - c0)
    packed_s, twin_s = statistics.median(times["packed"]), statistics.median(times["twin"])
    packed_c, twin_c = statistics.median(cpu["packed"]), statistics.median(cpu["twin"])
    return {"packed_ms": packed_s * 1e3, "fp32_twin_ms": twin_s * 1e3, "speedup_vs_fp32_twin": twin_s / packed_s,
            "packed_cpu_ms": packed_c * 1e3, "fp32_twin_cpu_ms": twin_c * 1e3,
            "speedup_cpu": twin_c / max(packed_c, 1e-9)}


def _unit_kind(unit: nn.Module) -> str:
    if not isinstance(unit, NativeBinaryConv2d):
        return unit.profile_kind
    kh, kw = unit.kernel_size
    geometry = "depthwise " if unit.depthwise else ""
    path = "float path" if unit.float_path else "native from float input" if unit.sign_depthwise else "popcount"
    return f"{geometry}{kh}x{kw}/{unit.stride[0]} {path}"


def layer_profile(packed: nn.Module, twin: nn.Module, x: Tensor, runs: int = 1) -> list[dict[str, Any]]:
    """Per binary unit: median ms per forward (summed over the positions of a shared unit) in the native runtime
    and in the fp32 twin (same module names), with its geometry; slowest twin layers first. The float blocks of
    :data:`FLOAT_BLOCKS` (ViT attention) get a row each too, without the time of the units inside them. Wall time
    (``*_ms``) and the process's CPU time (``*_cpu_ms``: at 1 thread the compute, without the waits for a core)."""
    units = {n: m for n, m in packed.named_modules() if isinstance(m, NATIVE_UNITS)}
    blocks = {n: m for n, m in packed.named_modules() if type(m) in FLOAT_BLOCKS}
    short_names = {n.removeprefix("model."): n for n in [*units, *blocks]}
    sides = ("packed", "twin", "packed_cpu", "twin_cpu")
    per_run: dict[str, dict[str, list[float]]] = {s: {side: [0.0] * runs for side in sides} for s in short_names}
    shapes: dict[str, list[int]] = {}
    run = [0]

    def attach(model: nn.Module, names: Mapping[str, str], side: str) -> list[Any]:
        hooks = []
        for short, full in names.items():
            start: list[tuple[float, float]] = []

            def pre(m: nn.Module, inputs: tuple, start: list[tuple[float, float]] = start) -> None:
                start.append((time.perf_counter(), time.process_time()))

            def post(m: nn.Module, inputs: tuple, output: Tensor, start=start, short=short, side=side) -> None:
                wall, cpu = start.pop()
                per_run[short][side][run[0]] += time.perf_counter() - wall
                per_run[short][side + "_cpu"][run[0]] += time.process_time() - cpu
                shapes.setdefault(short, list(inputs[0].shape))

            module = model.get_submodule(full)
            hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        return hooks

    hooks = attach(packed, short_names, "packed") + attach(twin, {s: s for s in short_names}, "twin")
    try:
        with torch.inference_mode():
            for i in range(runs):
                run[0] = i
                packed(x)
                twin(x)
    finally:
        for h in hooks:
            h.remove()
    for short, full in short_names.items():  # a block's own time: minus the profiled units inside it
        if full in blocks:
            for side in sides:
                inner = [per_run[s][side] for s, f in short_names.items() if f.startswith(full + ".")]
                per_run[short][side] = [t - sum(i[r] for i in inner) for r, t in enumerate(per_run[short][side])]
    rows = []
    for short, full in short_names.items():
        shape = shapes.get(short, [0, 0, 0, 0])
        module = units.get(full) or blocks[full]
        rows.append(
            {
                "layer": short,
                "kind": _unit_kind(module) if full in units else FLOAT_BLOCKS[type(module)],
                "channels": f"{module.in_channels}->{module.out_channels}" if full in units else "",
                "input_hw": f"{shape[1]} tokens" if len(shape) == 3 else "x".join(str(v) for v in shape[2:]),
                "packed_ms": statistics.median(per_run[short]["packed"]) * 1e3,
                "fp32_twin_ms": statistics.median(per_run[short]["twin"]) * 1e3,
                "packed_cpu_ms": statistics.median(per_run[short]["packed_cpu"]) * 1e3,
                "fp32_twin_cpu_ms": statistics.median(per_run[short]["twin_cpu"]) * 1e3,
            }
        )
    return sorted(rows, key=lambda r: -r["fp32_twin_ms"])


def profile_summary(
    rows: list[dict[str, Any]], packed_ms: float, twin_ms: float, packed_cpu_ms: float = 0.0, twin_cpu_ms: float = 0.0
) -> list[dict[str, Any]]:
    """The per-layer rows summed by kind, plus the time outside the binary units (given the medians of the whole
    model: wall, and CPU where the rows have it)."""
    keys = ("packed_ms", "fp32_twin_ms", "packed_cpu_ms", "fp32_twin_cpu_ms")
    kinds: dict[str, dict[str, float]] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"layers": 0, **{key: 0.0 for key in keys}})
        k["layers"] += 1
        for key in keys:
            k[key] += r.get(key, 0.0)
    out = [{"kind": name, **v} for name, v in sorted(kinds.items(), key=lambda kv: -kv[1]["fp32_twin_ms"])]
    totals = dict(zip(keys, (packed_ms, twin_ms, packed_cpu_ms, twin_cpu_ms)))
    out.append(
        {
            "kind": "everything else (stem or patch embedding, norms, activations, interpolation, classifier)",
            "layers": 0,
            **{key: max(totals[key] - sum(v[key] for v in kinds.values()), 0.0) for key in keys},
        }
    )
    return out


def deploy_benchmark(
    model: nn.Module,
    twin: nn.Module,
    config: Mapping[str, Any],
    size: tuple[int, int] = (480, 480),
    batch: int = 1,
    threads: tuple[int, ...] = (1,),
    runs: int = 5,
    warmup: int = 1,
    profile: bool = True,
    seed: int = 0,
    inputs: Tensor | None = None,
    trained: bool = False,
) -> dict[str, Any]:
    """Export ``model``, load it on the native runtime and compare/time it against ``twin`` (its fp32 twin).

    Returns the keys of the deploy benchmark (``packed_ms``, ``fp32_twin_ms``, ``speedup_vs_fp32_twin``,
    ``max_rel_diff``, ``argmax_agreement``, ``packed_resident_mib``, ``fp32_resident_mib``) for the first thread
    count, a ``by_threads`` list for all, the per-layer ``profile`` and its ``profile_summary``. ``inputs``
    replaces the random input; ``trained=True`` keeps the model's weights (else they are perturbed, see
    :func:`perturb_`).
    """
    if not trained:
        perturb_(model, seed)
    twin.eval()
    torch.manual_seed(seed)
    x = inputs.contiguous() if inputs is not None else torch.randn(batch, 3, *size)
    backbone = getattr(model, "backbone", None)  # the ViT floors the input to multiples of 28 (a resize if not)
    vit_input = list(backbone.input_size(*x.shape[-2:])) if hasattr(backbone, "input_size") else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.bdn"
        export_packed(model, path, config=config)
        file_bytes = path.stat().st_size
        reference = load_packed(path)
        packed = load_packed(path, runtime="native")
    del model
    result: dict[str, Any] = {
        "isa": native.isa(),
        "input": list(x.shape),
        "vit_input_hw": vit_input,
        "weights": "trained checkpoint" if trained else "random init, perturbed",
        "file_mib": file_bytes / MIB,
        "native_units": sum(isinstance(m, NATIVE_UNITS) for m in packed.modules()),
        "float_path_units": sum(isinstance(m, NATIVE_UNITS) and m.float_path for m in packed.modules()),
    }
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads[0])
        result.update(compare(reference, packed, x))
        del reference
        result["packed_resident_mib"] = resident_bytes(packed) / MIB  # with the kernel-layout weights
        result["kernel_layout_mib"] = prepared_weight_bytes(packed) / MIB
        result["fp32_resident_mib"] = resident_bytes(twin) / MIB
        result["memory_ratio"] = result["fp32_resident_mib"] / result["packed_resident_mib"]
        by_threads = []
        for n in threads:
            torch.set_num_threads(n)
            by_threads.append({"threads": n, **time_pair(packed, twin, x, runs, warmup)})
        result.update({k: v for k, v in by_threads[0].items() if k != "threads"})
        result["threads"] = threads[0]
        result["by_threads"] = by_threads
        if profile:
            torch.set_num_threads(threads[0])
            rows = layer_profile(packed, twin, x)
            result["profile"] = rows
            result["profile_summary"] = profile_summary(
                rows, result["packed_ms"], result["fp32_twin_ms"], result["packed_cpu_ms"], result["fp32_twin_cpu_ms"]
            )
    finally:
        torch.set_num_threads(previous)
    return result


def format_deploy(result: Mapping[str, Any], top: int = 12) -> str:
    """Markdown tables of a :func:`deploy_benchmark` result."""
    lines = [
        f"native runtime ({result['isa']}), input {result['input']}, {result['weights']}: "
        f"{result['native_units']} binary units "
        f"({result['float_path_units']} on the exact float path)",
        "",
        "| threads | packed ms | fp32 twin ms | speedup | packed CPU ms | twin CPU ms | speedup (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["by_threads"]:
        lines.append(
            f"| {r['threads']} | {r['packed_ms']:.1f} | {r['fp32_twin_ms']:.1f} | {r['speedup_vs_fp32_twin']:.2f}x | "
            f"{r['packed_cpu_ms']:.1f} | {r['fp32_twin_cpu_ms']:.1f} | {r['speedup_cpu']:.2f}x |"
        )
    lines += [
        "",
        f"resident: packed {result['packed_resident_mib']:.2f} MiB (of which the 1-bit weights in the kernels' layout "
        f"{result['kernel_layout_mib']:.2f}), fp32 twin {result['fp32_resident_mib']:.2f} MiB "
        f"({result['memory_ratio']:.1f}x); .bdn file {result['file_mib']:.2f} MiB",
        f"vs unpacked model: max rel diff {result['max_rel_diff']:.2e}, arg-max agreement "
        f"{result['argmax_agreement']:.5f}; worst unit on the same input: {result['unit_max_rel_diff']:.2e}",
    ]
    if "profile_summary" in result:
        head = "| where the time goes (1 forward) | layers | packed ms | fp32 twin ms | packed CPU ms | twin CPU ms |"
        lines += ["", head, "|---|---|---|---|---|---|"]
        for r in result["profile_summary"]:
            lines.append(f"| {r['kind']} | {r['layers']} | {r['packed_ms']:.1f} | {r['fp32_twin_ms']:.1f} | "
                         f"{r.get('packed_cpu_ms', 0.0):.1f} | {r.get('fp32_twin_cpu_ms', 0.0):.1f} |")  # fmt: skip
        lines += ["", "| layer | kind | channels | input | packed ms | fp32 twin ms | packed CPU ms | twin CPU ms |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in result["profile"][:top]:
            lines.append(
                f"| {r['layer']} | {r['kind']} | {r['channels']} | {r['input_hw']} | {r['packed_ms']:.1f} | "
                f"{r['fp32_twin_ms']:.1f} | {r['packed_cpu_ms']:.1f} | {r['fp32_twin_cpu_ms']:.1f} |"
            )
    return "\n".join(lines)


DEFAULT_OVERRIDES = ["model=upernet_convnext", "model.width=tiny"]
#: the fp32 twin: every binarizer full precision (the ViT's linears and attention operands too)
FP32_TWIN = ["method.activation=fp32", "method.weight=fp32", "method.linear_activation=fp32",
             "method.linear_weight=fp32"]  # fmt: skip
FP32_METHOD = {key.removeprefix("method.").split("=")[0]: "fp32" for key in FP32_TWIN}
DEPLOY_RUNS = 5
#: default input size per model config: UperNet 480x480; DPT 476x476 (34 x 14, a multiple of 28, which the ViT
#: needs: other sizes are floored to multiples of 28 by a bilinear resize inside both models)
DEFAULT_SIZES = {"upernet_convnext": (480, 480), "dpt_vit_s14": (476, 476)}


def deploy_overrides(overrides: list[str]) -> list[str]:
    """The user's overrides after the defaults they do not set (``model=...`` replaces the default model)."""
    given = {o.split("=")[0].lstrip("+~") for o in overrides}
    return [d for d in DEFAULT_OVERRIDES if d.split("=")[0] not in given] + list(overrides)


def deploy_size(overrides: list[str], size: tuple[int, int] | None) -> tuple[int, int]:
    """``--deploy-size`` or the default size of the chosen model config (:data:`DEFAULT_SIZES`)."""
    if size is not None:
        return (int(size[0]), int(size[1]))
    model = next((o.split("=", 1)[1] for o in reversed(overrides) if o.split("=")[0] == "model"), "upernet_convnext")
    return DEFAULT_SIZES.get(model, DEFAULT_SIZES["upernet_convnext"])


def validation_images(config: Mapping[str, Any], count: int) -> Tensor:
    """The first ``count`` validation images of a run config's data (normalised as in training)."""
    from hydra.utils import instantiate

    data = instantiate(dict(config["data"]), _convert_="all")
    data.setup("validate")
    images = [data.val_dataloader().dataset[i]["image"] for i in range(count)]
    return torch.stack(images).float().contiguous()


def main_deploy(overrides: list[str], build: Callable[[list[str]], tuple[nn.Module, Any]], args: Any) -> dict:
    """``scripts/benchmark.py --deploy``: ``build(overrides) -> (model, cfg)`` composes and instantiates a config.

    Batch 1, :data:`DEPLOY_RUNS` timed runs after one warm-up, at 1 then 2 threads (``--threads N``: only N; the
    accuracy check and the profile use the first), ``--deploy-size``, ``--seed`` and ``--out``; prints tables
    and, last, a JSON line. ``--deploy-ckpt CKPT``: the trained model of a Lightning checkpoint instead, on the
    first ``--deploy-images`` validation images of its data config (its own size and batch).
    """
    import json

    from omegaconf import OmegaConf

    from bindense.export.packed import build_model_from_config
    from bindense.utils.checkpoint import load_checkpoint_model

    inputs = None
    if args.deploy_ckpt:
        model, config = load_checkpoint_model(args.deploy_ckpt)
        method = {**config["model"]["method"], **FP32_METHOD}
        twin = build_model_from_config({"model": {**config["model"], "method": method}})
        inputs = validation_images(config, args.deploy_images)
        config = {"model": config["model"]}
        overrides = [f"ckpt={args.deploy_ckpt}"]
    else:
        overrides = deploy_overrides(list(overrides))
        torch.manual_seed(args.seed)
        model, cfg = build(overrides)
        torch.manual_seed(args.seed)
        twin, _ = build(overrides + FP32_TWIN)
        config = {"model": OmegaConf.to_container(cfg.model, resolve=True)}
    threads = (args.threads,) if args.threads else (1, 2)
    result = deploy_benchmark(
        model,
        twin,
        config,
        size=deploy_size(overrides, args.deploy_size),
        batch=1,
        threads=threads,
        runs=DEPLOY_RUNS,
        warmup=1,
        seed=args.seed,
        inputs=inputs,
        trained=inputs is not None,
    )
    result["overrides"] = overrides
    out = args.out or Path("logs") / "benchmark" / f"deploy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(" ".join(overrides))
    print(format_deploy(result))
    print(f"results written to {out}")
    keys = ("packed_ms", "fp32_twin_ms", "speedup_vs_fp32_twin", "max_rel_diff", "argmax_agreement",
            "packed_resident_mib", "fp32_resident_mib", "unit_max_rel_diff", "isa", "threads",
            "packed_cpu_ms", "fp32_twin_cpu_ms", "speedup_cpu")  # fmt: skip
    print(json.dumps({k: result[k] for k in keys}))
    return result
