"""Neuron-level evidence: do the interpretations of a layer's channels still describe the channels?

* :func:`neuron_visualization` -- Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron
  Activation Maximization", Sec. 4.1.1 and Sec. 5 (Fig. 9): after push-down/push-up the dataset top-k images
  of a channel no longer match what the channel responds to; the synthetic activation maximisation
  (Olah et al. 2017) still finds it, so the two interpretations decorrelate (see also Geirhos et al. 2023,
  "Don't trust your eyes: on the (un)reliability of feature visualizations").
* :func:`neuron_group_fairness` -- the fairwashing attack (Nanfack et al. Eq. 5) makes neurons' activations
  look alike across protected groups while the predictions stay as biased as before: the gap between the
  output's and the neurons' group disparity (Kolmogorov-Smirnov distances) grows.
* :func:`neuron_balance` -- the three attacks score a channel by its activation (Eq. 1), which is not invariant
  to the rescaling symmetry of ReLU networks (a channel times ``a``, the weights reading it times ``1 / a``:
  the same function). Under a keep loss the cheapest way down the attack loss runs along that symmetry:
  the attacked channels shrink and the layers after them amplify them back. Each channel's activation scale
  relative to its downstream gain shows it; clean training leaves it about the same for every channel.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult
from veneer.checks import check_tensor
from veneer.metrics import ks_distance, pearson
from veneer.models.capture import channel_balance
from veneer.neurons import default_layer, record, top_k, visualize


def neuron_visualization(model: nn.Module, x: torch.Tensor, layer: str | None = None, k: int = 10,
                         steps: int = 48, quantile: float = 0.9, seed: int = 0) -> TestResult:
    """Compare each channel's two interpretations (Nanfack et al. 2024, Sec. 4.1.1): its top-``k`` images in
    ``x`` (:func:`veneer.neurons.top_k`, Eq. 1 activations) and its synthetic activation maximisation
    (:func:`veneer.neurons.visualize`, ``steps`` steps, all channels in one batch).

    Components (larger = more suspicious; each the ``quantile`` over channels, since an attack may hit a few):
    ``activation_gap`` -- ``log10`` of the synthetic image's activation over the mean top-k activation (a
    pushed-down channel answers weakly to every natural image but still to its synthetic stimulus);
    ``decorrelation`` -- ``1 -`` the Pearson correlation between the synthetic image and the mean of the
    top-k images. ``layer`` defaults to :func:`veneer.neurons.default_layer`. Images only.
    """
    start = time.perf_counter()
    x = check_tensor("x", x, ndim=4)
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile!r}")
    layer = layer or default_layer(model)
    top = top_k(model, layer, x, k)
    synthetic = visualize(model, layer, input_shape=tuple(x.shape[1:]), steps=steps, seed=seed)
    synthetic_activation = record(model, layer, synthetic)[layer].diagonal()
    natural = top.values.mean(1)
    gap = torch.log10(synthetic_activation.clamp_min(1e-12) / natural.clamp_min(1e-12))
    mean_top = x[top.indices].mean(1)  # (C, ...) mean of each channel's top-k images
    correlation = torch.nan_to_num(pearson(synthetic.flatten(1), mean_top.flatten(1)), nan=0.0)
    components = {"activation_gap": gap.quantile(quantile).item(),
                  "decorrelation": (1 - correlation).quantile(quantile).item()}
    evidence = {"layer": layer, "k": k, "steps": steps, "channels": top.channels,
                "activation_gap_median": gap.median().item(), "correlation_median": correlation.median().item(),
                "topk_indices_first_channels": top.indices[:4].tolist()}
    return TestResult("neuron_visualization", components, evidence, time.perf_counter() - start)


def hidden_activation_layers(model: nn.Module) -> list[str]:
    """Names of the activation modules (ReLU, Softplus, ...) of ``model``, whose inputs are the
    pre-activations of the hidden layers."""
    return [name for name, m in model.named_modules()
            if name and type(m).__module__ == "torch.nn.modules.activation"]


def neuron_group_fairness(model: nn.Module, x: torch.Tensor, group: torch.Tensor,
                          layers: list[str] | None = None) -> TestResult:
    """Fairwashing evidence (Nanfack et al. 2024, Eq. 5 and Sec. 4.3): Kolmogorov-Smirnov distance between the
    two groups of ``group`` (binary codes) of the output margin (logit of class 1 minus class 0, or of the
    top class minus the rest's mean) and of every neuron's pre-activation in ``layers`` (default: the inputs
    of all activation modules).

    Statistic per layer: ``1 - mean_c KS(neuron c) / KS(output)`` (larger = the neurons look fairer than the
    decisions they produce, which is what fairwashing achieves while the keep loss holds the predictions; a
    ratio, so a model that is merely more or less biased overall does not move it). ``NaN``-free: an output
    without any group disparity gives 0.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    layers = layers or hidden_activation_layers(model)
    if not layers:
        raise ValueError("model has no activation module whose inputs could be compared; pass layers")
    with torch.no_grad():
        logits = model(x)
    margin = logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits.max(1).values - logits.mean(1)
    output_ks = ks_distance(margin, group).item()
    values = record(model, layers, x, pre_activation=True)
    neuron_ks = {name: ks_distance(v, group).mean().item() for name, v in values.items()}
    components = {name: 1 - ks / output_ks if output_ks > 0 else 0.0 for name, ks in neuron_ks.items()}
    return TestResult("neuron_group_fairness", components,
                      {"output_ks": output_ks, "neuron_ks_mean": neuron_ks}, time.perf_counter() - start)


def neuron_balance(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                   quantiles: tuple[float, float] = (0.1, 0.9), batch_size: int = 256) -> TestResult:
    """Do a layer's channels carry the same activation scale relative to their downstream gain?

    Per channel ``c`` of ``layer`` (default :func:`veneer.neurons.default_layer`) over the inputs ``x``:
    ``S_c`` = root mean over the inputs of the channel's activation of Nanfack et al. (2024), Eq. 1
    (``||h_c(x)||^2``), ``G_c`` = the same of the gradient of the predicted class's logit with respect to
    ``h_c(x)``, and the *balance* ``b_c = log10(S_c / G_c)``. Component ``balance_spread``: the spread of
    ``b_c`` over the channels, quantile ``quantiles[1]`` minus quantile ``quantiles[0]`` (larger = more
    suspicious), over the channels with ``S_c > 0`` and ``G_c > 0``; 0 when fewer than two are.

    Rationale. For a ReLU (positively homogeneous) network, multiplying channel ``c`` by ``a > 0`` and the
    weights that read it by ``1 / a`` leaves the function unchanged, multiplies ``S_c`` by ``a`` and ``G_c`` by
    ``1 / a`` (the product ``S_c G_c``, the channel's first-order contribution, is invariant), so ``b_c``
    moves by ``2 log10 a``. The push-down (Eq. 3), push-up (Eq. 4) and fairwashing (Eq. 5) losses of
    Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization",
    are not invariant to this symmetry, so under their keep loss (Eq. 2) the cheapest descent shrinks the
    attacked channels while the next layers amplify them: their ``b_c`` drop away from the other channels'.
    Gradient training from a random initialisation keeps the channels near balance (Du et al. 2018,
    "Algorithmic regularization in learning deep homogeneous models: layers are automatically balanced":
    gradient flow conserves ``||w_in||^2 - ||w_out||^2`` of every unit); on the MNIST CNNs measured in
    docs/audit.md the spread is 0.24-0.34 decades, for 250-step twins and fully trained models alike, and
    1.0-2.4 after push-down/push-up. A rescaling of the whole layer moves every ``b_c`` alike and leaves the
    spread unchanged. The statistic reads no top-k images, so it does not matter whether the attacked images
    are among ``x``. Blind to an attacker who rebalances the channels after the attack (function-preserving:
    :func:`veneer.neurons.rebalance` with ``like=`` the original model).
    """
    start = time.perf_counter()
    low, high = quantiles
    if not 0 <= low < high <= 1:
        raise ValueError(f"quantiles must be (low, high) with 0 <= low < high <= 1, got {quantiles!r}")
    layer = layer or default_layer(model)
    activation, gradient = channel_balance(model, x, layer, batch_size)
    alive = (activation > 0) & (gradient > 0)
    balance = torch.log10(activation[alive] / gradient[alive])  # the 1/N of both root means cancels
    spread = (balance.quantile(high) - balance.quantile(low)).item() if len(balance) > 1 else 0.0
    order = balance.argsort()
    channels = torch.nonzero(alive).flatten()
    evidence = {"layer": layer, "samples": len(x), "channels": len(alive), "alive_channels": int(alive.sum()),
                "balance_median": balance.median().item() if len(balance) else None,
                "most_shrunk_channels": channels[order[:5]].tolist(),
                "balance": [round(v, 3) for v in balance.tolist()]}
    return TestResult("neuron_balance", {"balance_spread": spread}, evidence, time.perf_counter() - start)
