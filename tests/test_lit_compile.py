"""``module.compile``: the net's training forward through ``torch.compile``, with the state dict and evaluation as
without it. The tests use Dynamo's ``eager`` backend (tracing, graph breaks and guards, no code generation): fast on
a tiny net with two BiDense units, slow on the default nano model."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from bindense.binary import BinaryConv2d
from bindense.binary.layers import configure_lean
from bindense.lit import DenseLitModule, SegCrossEntropy

K = 4
# Dynamo reads ``.grad`` of the non-leaf input while it wraps it (a warning torch raises internally)
pytestmark = pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")


class TinyBinaryNet(nn.Module):
    """A float stem and two BiDense units (the fused autograd Function, whose weight check breaks the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            BinaryConv2d(8, 8, 3, padding=1, activation="dab", weight="scaled_sign"),
            BinaryConv2d(8, 8, 3, padding=1, activation="dab", weight="scaled_sign"),
        )
        self.head = nn.Conv2d(8, K, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.head(self.body(self.stem(x)))}


def make_module(compile=False) -> DenseLitModule:
    """Eager units: under torch.compile the fused node runs its eager ops (Dynamo cannot trace the native
    kernels), so the uncompiled module they are compared with runs the same ops."""
    torch.manual_seed(0)
    return DenseLitModule(
        net=configure_lean(TinyBinaryNet(), unit_kernels="eager"),
        tasks=["seg"],
        losses={"seg": SegCrossEntropy(255)},
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
        metrics={"seg": {"num_classes": K, "ignore_index": 255}},
        compile=compile,
    )


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(2, 3, 12, 16, generator=g), "seg": torch.randint(0, K, (2, 12, 16), generator=g)}


def grads(module: DenseLitModule) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_training_step_equals_eager_and_keeps_state_dict_keys() -> None:
    eager, compiled = make_module(), make_module({"backend": "eager"})
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    keys = list(eager.state_dict())
    for module in (eager, compiled):
        module.train()
        module.shared_step(batch(), "train")[2].backward()
    assert compiled._compiled_net is not None  # the training forward went through torch.compile
    assert list(compiled.state_dict()) == keys
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    assert [n for n, _ in compiled.named_modules()] == [n for n, _ in eager.named_modules()]
    g_eager, g_compiled = grads(eager), grads(compiled)
    assert g_eager.keys() == g_compiled.keys() and g_eager
    for k in g_eager:
        torch.testing.assert_close(g_compiled[k], g_eager[k], rtol=0, atol=0, msg=k)


def test_evaluation_stays_eager() -> None:
    module = make_module(True)
    module.eval()
    assert module.training_net() is module.net
    module.train()
    with torch.no_grad():
        assert module.training_net() is module.net
    assert module._compiled_net is None  # nothing compiled yet
    plain = make_module(False).train()
    assert plain.training_net() is plain.net


def test_compile_option_is_checked() -> None:
    with pytest.raises(ValueError, match="module.compile"):
        make_module("yes")
    assert make_module(True).hparams["compile"] is True
    assert make_module({"mode": "max-autotune"}).compile_options == {"mode": "max-autotune"}
    assert make_module(False).compile_options is None


@pytest.mark.slow
def test_default_model_trains_compiled(tmp_path) -> None:
    """The default config with ``module.compile`` (Dynamo through every unit's graph break): one training step,
    gradients for every parameter, state-dict keys unchanged. Dynamo's ``eager`` backend: inductor fails on this
    model on CPU with torch 2.13 (docs/TRAINING.md, "torch.compile")."""
    from bindense.lit.pipeline import build_module
    from bindense.utils.compose import compose_config

    cfg = compose_config("train", ["module.compile={backend:eager}"], output_dir=tmp_path)
    module = build_module(cfg)
    keys = list(module.state_dict())
    module.train()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=g)
    loss = module.shared_step({"image": images, "seg": torch.randint(0, 13, (2, 64, 64), generator=g)}, "train")[2]
    loss.backward()
    assert torch.isfinite(loss) and module._compiled_net is not None
    assert all(p.grad is not None for p in module.net.parameters() if p.requires_grad)
    assert list(module.state_dict()) == keys
