"""veneer.audit.neuron: top-k vs synthetic visualisation, and neurons' group disparity."""

from __future__ import annotations

import copy

import scipy.stats
import torch

from veneer.audit import neuron_group_fairness, neuron_visualization
from veneer.neurons import record, visualize


def test_neuron_visualization_gap_is_zero_when_the_synthetic_images_are_in_the_data(small_cnn, cnn_inputs):
    model = small_cnn.float()
    before = copy.deepcopy(model.state_dict())
    synthetic = visualize(model, "4", input_shape=(1, 28, 28), steps=6, seed=0)
    data = torch.cat([cnn_inputs.float(), synthetic])
    result = neuron_visualization(model, data, layer="4", k=1, steps=6, quantile=1.0, seed=0)
    # each channel's top-1 natural image is at least as active as its synthetic image (which is in the data)
    assert result.components["activation_gap"] <= 1e-6
    assert result.evidence["channels"] == 8 and result.evidence["layer"] == "4"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    alone = neuron_visualization(model, cnn_inputs.float(), layer="4", k=2, steps=6, seed=0)
    acts = record(model, "4", synthetic)["4"].diagonal()
    natural = record(model, "4", cnn_inputs.float())["4"].topk(2, dim=0).values.mean(0)
    expected = torch.log10(acts.clamp_min(1e-12) / natural.clamp_min(1e-12)).quantile(0.9).item()
    assert abs(alone.components["activation_gap"] - expected) < 1e-5


def test_neuron_group_fairness_matches_scipy_ks(small_mlp, mlp_inputs):
    x = torch.randn(60, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    group = (torch.arange(60) % 2).long()
    result = neuron_group_fairness(small_mlp, x, group)
    with torch.no_grad():
        logits = small_mlp(x)
        pre = small_mlp[0](x)
    margin = (logits.max(1).values - logits.mean(1)).numpy()
    output = scipy.stats.ks_2samp(margin[::2], margin[1::2]).statistic
    neurons = sum(scipy.stats.ks_2samp(pre[::2, c].numpy(), pre[1::2, c].numpy()).statistic for c in range(16)) / 16
    assert abs(result.evidence["output_ks"] - output) < 1e-12
    assert abs(result.components["1"] - (1 - neurons / output)) < 1e-12
    assert set(result.components) == {"1", "3"}
