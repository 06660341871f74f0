"""The yardstick of issue 10: Captum's own test-helper models (``captum.testing.helpers.basic_models``, shipped in
the captum wheel), each with inputs, extra forward arguments and per-sample targets, explained by Gradient,
Gradient x Input, Integrated Gradients, LRP and DeepLift in Captum and in veneer (float64, batch 4).

``compare()`` returns one row per (model, method) pair: whether Captum explains it, whether veneer does, and
the relative error between them. ``tests/explain/test_captum_models.py`` asserts the table.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from captum.attr import LRP as CaptumLRP
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import InputXGradient, Saliency
from captum.attr import IntegratedGradients as CaptumIG
from captum.testing.helpers import basic_models as bm

from veneer.explain import LRP, DeepLift, Gradient, GradientXInput, IntegratedGradients

DTYPE = torch.float64
BATCH = 4
STEPS = 8
# the floor of the error's denominator: the three ConvNet models end in a softmax of logits that differ by a
# constant (fc2's weights are all ones), so their target output is constant and every attribution is round-off
ROUND_OFF = 1e-9


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    shapes: tuple[tuple[int, ...], ...]  # per-sample input shapes
    extra: tuple = ()  # additional_forward_args
    target: tuple[int, ...] | None = (0, 1, 1, 0)  # per-sample targets (None: the model returns one score)


def _rand(seed: int, shape) -> torch.Tensor:
    return torch.randn((BATCH, *shape), generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def _extra_tensor(shape):
    return _rand(99, shape)


CASES = [
    Case("BasicLinearReLULinear", lambda: bm.BasicLinearReLULinear(3, bias=True), ((3,),), target=(0, 0, 0, 0)),
    Case("MixedKwargsAndArgsModule", bm.MixedKwargsAndArgsModule, ((3,), (3,))),
    Case("BasicModel", bm.BasicModel, ((3,),)),
    Case("BasicModel2", bm.BasicModel2, ((3,), (3,))),
    Case("BasicModel3", bm.BasicModel3, ((3,), (3,))),
    Case("BasicModel4_MultiArgs", bm.BasicModel4_MultiArgs, ((3,), (3,)), extra=(2.0, 1), target=None),
    Case("BasicModel5_MultiArgs", bm.BasicModel5_MultiArgs, ((3,), (3,)), extra=([2, 3], 1), target=None),
    Case("BasicModel6_MultiTensor", bm.BasicModel6_MultiTensor, ((3,), (3,)), target=None),
    Case("BasicLinearModel", bm.BasicLinearModel, ((4,), (3,)), target=(0, 0, 0, 0)),
    Case("BasicLinearModel2", lambda: bm.BasicLinearModel2(5, 3), ((5,),)),
    Case("BasicLinearModel_Multilayer", lambda: bm.BasicLinearModel_Multilayer(5, 4, 3), ((5,),)),
    Case("ReLUDeepLiftModel", bm.ReLUDeepLiftModel, ((3,), (3,)), extra=(3,)),
    Case("LinearMaxPoolLinearModel", bm.LinearMaxPoolLinearModel, ((4,),), target=(0, 0, 0, 0)),
    Case("BasicModelWithReusedModules", bm.BasicModelWithReusedModules, ((3,),)),
    Case("BasicModelWithReusedLinear", bm.BasicModelWithReusedLinear, ((3,),)),
    Case("BasicModel_MaxPool_ReLU", bm.BasicModel_MaxPool_ReLU, ((3, 6),)),
    Case("BasicModel_MaxPool_ReLU(inplace)", lambda: bm.BasicModel_MaxPool_ReLU(inplace=True), ((3, 6),)),
    Case("TanhDeepLiftModel", bm.TanhDeepLiftModel, ((3,), (3,))),
    Case("ReLULinearModel", bm.ReLULinearModel, ((3,), (3,)), extra=(2,), target=(0, 0, 0, 0)),
    Case("ReLULinearModel(inplace)", lambda: bm.ReLULinearModel(inplace=True), ((3,), (3,)), target=(0, 0, 0, 0)),
    Case("SimpleLRPModel", lambda: bm.SimpleLRPModel(inplace=False), ((3,),), target=(0, 0, 0, 0)),
    Case("SimpleLRPModel(inplace)", lambda: bm.SimpleLRPModel(inplace=True), ((3,),), target=(0, 0, 0, 0)),
    Case("BasicModel_MultiLayer", bm.BasicModel_MultiLayer, ((3,),)),
    Case("BasicModel_MultiLayer(add_input)", bm.BasicModel_MultiLayer, ((3,),), extra=("tensor",)),
    Case("BasicModel_MultiLayer(inplace)", lambda: bm.BasicModel_MultiLayer(inplace=True), ((3,),)),
    Case("BasicModel_MultiLayer(multi_input_module)", lambda: bm.BasicModel_MultiLayer(multi_input_module=True),
         ((3,),)),
    Case("BasicModel_MultiLayer_MultiInput", bm.BasicModel_MultiLayer_MultiInput, ((3,), (3,), (3,)), extra=(2,)),
    Case("BasicModel_MultiLayer_TrueMultiInput", bm.BasicModel_MultiLayer_TrueMultiInput,
         ((3,), (3,), (3,), (3,))),
    Case("BasicModel_ConvNet_One_Conv", bm.BasicModel_ConvNet_One_Conv, ((1, 4, 4),)),
    Case("BasicModel_ConvNetWithPaddingDilation", bm.BasicModel_ConvNetWithPaddingDilation, ((1, 6, 6),)),
    Case("BasicModel_ConvNet", bm.BasicModel_ConvNet, ((1, 10, 10),)),
    Case("BasicModel_ConvNet_MaxPool1d", bm.BasicModel_ConvNet_MaxPool1d, ((1, 10),)),
    Case("BasicModel_ConvNet_MaxPool3d", bm.BasicModel_ConvNet_MaxPool3d, ((1, 10, 10, 10),)),
]

METHODS = ("Gradient", "GradientXInput", "IntegratedGradients", "LRP", "DeepLift")


def _captum(method: str, model, inputs, target, extra):
    if method == "Gradient":
        return Saliency(model).attribute(inputs, target=target, abs=False, additional_forward_args=extra)
    if method == "GradientXInput":
        return InputXGradient(model).attribute(inputs, target=target, additional_forward_args=extra)
    if method == "IntegratedGradients":
        return CaptumIG(model).attribute(inputs, target=target, n_steps=STEPS, method="riemann_right",
                                         additional_forward_args=extra)
    if method == "LRP":
        return CaptumLRP(model).attribute(inputs, target=target, additional_forward_args=extra)
    return CaptumDeepLift(model).attribute(inputs, target=target, additional_forward_args=extra)


def _veneer(method: str, model):
    if method == "IntegratedGradients":
        return IntegratedGradients(model, steps=STEPS)
    if method == "LRP":
        return LRP(model, epsilon=1e-9)  # Captum's default EpsilonRule
    return {"Gradient": Gradient, "GradientXInput": GradientXInput, "DeepLift": DeepLift}[method](model)


@dataclass
class Row:
    case: str
    method: str
    captum: bool
    veneer: bool
    error: float | None  # max |veneer - captum| / max(max |captum|, ROUND_OFF) over the inputs
    note: str = ""


def _inputs(case: Case):
    inputs = tuple(_rand(i, shape) for i, shape in enumerate(case.shapes))
    extra = tuple(_extra_tensor(case.shapes[0]) if e == "tensor" else e for e in case.extra)
    target = None if case.target is None else torch.tensor(case.target)
    return inputs, extra, target


def compare_case(case: Case, method: str) -> Row:
    torch.manual_seed(0)
    model = case.build().to(DTYPE).eval()
    inputs, extra, target = _inputs(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference = _captum(method, model, inputs if len(inputs) > 1 else inputs[0], target, extra or None)
        except Exception as error:  # noqa: BLE001 -- Captum does not explain this pair
            return Row(case.name, method, False, False, None, f"Captum: {type(error).__name__}: {error}"[:160])
    reference = reference if isinstance(reference, tuple) else (reference,)
    torch.manual_seed(0)
    model = case.build().to(DTYPE).eval()
    try:
        ours = _veneer(method, model)(inputs if len(inputs) > 1 else inputs[0], target,
                                      additional_forward_args=extra or None)
    except Exception as error:  # noqa: BLE001 -- recorded in the table
        return Row(case.name, method, True, False, None, f"veneer: {type(error).__name__}: {error}"[:160])
    ours = ours if isinstance(ours, tuple) else (ours,)
    scale = max(r.abs().max().item() for r in reference)
    error = max((o - r.to(o)).abs().max().item() for o, r in zip(ours, reference)) / max(scale, ROUND_OFF)
    return Row(case.name, method, True, True, error)


def compare() -> list[Row]:
    return [compare_case(case, method) for case in CASES for method in METHODS]


if __name__ == "__main__":
    rows = compare()
    for row in rows:
        print(f"{row.case:<45s} {row.method:<20s} captum={row.captum!s:<5} veneer={row.veneer!s:<5} "
              f"err={row.error if row.error is None else f'{row.error:.2e}'} {row.note}")
    explained = [r for r in rows if r.captum]
    equal = [r for r in explained if r.veneer and r.error <= 1e-6]
    print(f"Captum explains {len(explained)} pairs; veneer explains {sum(r.veneer for r in explained)} and "
          f"equals Captum on {len(equal)}")
