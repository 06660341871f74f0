"""veneer.audit.neuron: top-k vs synthetic visualisation, channel balance, and neurons' group disparity."""

from __future__ import annotations

import copy
import math

import pytest
import scipy.stats
import torch

from veneer.audit import Calibration, neuron_balance, neuron_group_fairness, neuron_visualization
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


def _balance_by_hand(model, x):
    """log10(RMS activation / RMS gradient of the predicted logit) per channel of module "4" of the small CNN,
    through the split chain (modules 0-4, then 5-8) instead of hooks; NaN for dead channels."""
    h = model[:5](x).detach().requires_grad_(True)
    logits = model[5:](h)
    (g,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), h)
    return torch.log10(h.detach().pow(2).sum((0, 2, 3)).sqrt() / g.pow(2).sum((0, 2, 3)).sqrt())


def _rescale_channels(model, channels, a):
    """Channels of conv "3" times ``a``, the Linear "7" columns that read them (7 x 7 each) times ``1 / a``:
    the same function for a ReLU/max-pool chain (positive homogeneity)."""
    with torch.no_grad():
        for c in channels:
            model[3].weight[c] *= a
            model[3].bias[c] *= a
            model[7].weight[:, c * 49:(c + 1) * 49] /= a
    return model


@pytest.fixture
def many_cnn_inputs():
    return torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_neuron_balance_matches_a_direct_computation_in_any_chunking(small_cnn, many_cnn_inputs):
    before = copy.deepcopy(small_cnn.state_dict())
    result = neuron_balance(small_cnn, many_cnn_inputs)
    balance = _balance_by_hand(small_cnn, many_cnn_inputs)
    balance = balance[torch.isfinite(balance)]
    assert result.evidence["layer"] == "4" and result.evidence["alive_channels"] == len(balance) >= 4
    assert torch.allclose(torch.tensor(result.evidence["balance"], dtype=balance.dtype), balance, atol=1e-3)
    expected = (balance.quantile(0.9) - balance.quantile(0.1)).item()
    assert abs(result.components["balance_spread"] - expected) < 1e-9
    chunked = neuron_balance(small_cnn, many_cnn_inputs, layer="4", batch_size=5)
    assert abs(chunked.statistic - result.statistic) < 1e-9
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())


def test_neuron_balance_flags_channels_shrunk_against_the_next_layer_but_not_a_whole_layer(small_cnn,
                                                                                           many_cnn_inputs):
    clean = neuron_balance(small_cnn, many_cnn_inputs, quantiles=(0.0, 1.0))
    reference = _balance_by_hand(small_cnn, many_cnn_inputs)
    # a push-down that only rescales: half the channels 100x weaker, the next layer 100x stronger on them
    shrunk = _rescale_channels(copy.deepcopy(small_cnn), range(4), 0.01)
    assert torch.allclose(shrunk(many_cnn_inputs), small_cnn(many_cnn_inputs), atol=1e-9)  # the same function
    shift = _balance_by_hand(shrunk, many_cnn_inputs) - reference
    alive = torch.isfinite(shift)
    expected = torch.tensor([2 * math.log10(0.01)] * 4 + [0.0] * 4, dtype=torch.float64)  # 2 log10 a
    assert torch.allclose(shift[alive], expected[alive])
    attacked = neuron_balance(shrunk, many_cnn_inputs, quantiles=(0.0, 1.0))
    assert attacked.statistic > clean.statistic + 1.0
    assert set(attacked.evidence["most_shrunk_channels"][:2]) <= {0, 1, 2, 3}
    # the same rescaling of every channel moves every balance alike: the spread does not change
    uniform = neuron_balance(_rescale_channels(copy.deepcopy(small_cnn), range(8), 0.01), many_cnn_inputs,
                             quantiles=(0.0, 1.0))
    assert abs(uniform.statistic - clean.statistic) < 1e-6
    # scored like the audit does against clean references: the shrunk model flags, the clean one does not
    calibration = Calibration("reference")
    calibration.add({"neuron_balance": neuron_balance(small_cnn, many_cnn_inputs)})
    calibration.add({"neuron_balance": neuron_balance(small_cnn, many_cnn_inputs[::2])})
    assert calibration.score(neuron_balance(shrunk, many_cnn_inputs))["flag"]
    assert not calibration.score(neuron_balance(small_cnn, many_cnn_inputs[1::2]))["flag"]


def test_neuron_balance_on_an_mlp_with_frozen_weights_and_bad_arguments(small_mlp):
    x = torch.randn(32, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    result = neuron_balance(small_mlp.requires_grad_(False), x)
    assert result.evidence["layer"] == "3" and result.evidence["channels"] == 8
    h = small_mlp[:4](x).detach().requires_grad_(True)
    logits = small_mlp[4:](h)
    (g,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), h)
    balance = torch.log10(h.detach().pow(2).sum(0).sqrt() / g.pow(2).sum(0).sqrt())
    balance = balance[torch.isfinite(balance)]
    assert abs(result.statistic - (balance.quantile(0.9) - balance.quantile(0.1)).item()) < 1e-9
    with pytest.raises(ValueError, match="quantiles"):
        neuron_balance(small_mlp, x, quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="batch_size"):
        neuron_balance(small_mlp, x, batch_size=0)
    with pytest.raises(ValueError, match="x must have"):
        neuron_balance(small_mlp, x[0])
