"""veneer.neurons.rebalance: the rescaling symmetry of ReLU networks, exact with powers of two."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veneer.audit import neuron_balance
from veneer.neurons import channel_balance, rebalance


def _powers_of_two(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.pow(2.0, torch.randint(-4, 5, (count,), generator=generator).double())


@pytest.mark.parametrize("layer, channels", [("4", 8), ("0", 4), ("1", 4)])
def test_powers_of_two_leave_every_output_unchanged_exactly(small_cnn, cnn_inputs, layer, channels):
    # "4" is the ReLU after conv "3" (read through max-pool and flatten by the first linear layer); "0" is a
    # conv read by the conv "3"; "1" names the activation after "0"
    moved = rebalance(small_cnn, layer, scales=_powers_of_two(channels, 0), exact=True)
    assert torch.equal(moved(cnn_inputs), small_cnn(cnn_inputs))
    assert not torch.equal(moved[3].weight, small_cnn[3].weight)  # the parameters did change
    assert small_cnn[0].weight.requires_grad and not small_cnn.training  # the model passed in is unchanged


def test_rebalance_of_a_tabular_mlp(small_mlp, mlp_inputs):
    moved = rebalance(small_mlp, "0", scales=_powers_of_two(16, 1), exact=True)
    assert torch.equal(moved(mlp_inputs), small_mlp(mlp_inputs))


def test_any_positive_scale_keeps_the_function_up_to_rounding(small_cnn, cnn_inputs):
    scales = torch.linspace(0.3, 3.0, 8, dtype=torch.float64)
    moved = rebalance(small_cnn, "4", scales=scales)
    assert torch.equal(moved(cnn_inputs).argmax(1), small_cnn(cnn_inputs).argmax(1))
    torch.testing.assert_close(moved(cnn_inputs), small_cnn(cnn_inputs), rtol=1e-12, atol=1e-12)
    # the symmetry moves each channel's balance log10(S / G) by 2 log10 a and keeps S * G
    s0, g0 = channel_balance(small_cnn, cnn_inputs, "4")
    s1, g1 = channel_balance(moved, cnn_inputs, "4")
    alive = (s0 > 0) & (g0 > 0)
    torch.testing.assert_close(torch.log10(s1 / g1)[alive] - torch.log10(s0 / g0)[alive],
                               2 * torch.log10(scales)[alive])
    torch.testing.assert_close((s1 * g1)[alive], (s0 * g0)[alive])


def test_like_restores_the_reference_balance_and_defeats_the_balance_test(small_cnn, cnn_inputs):
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    shrunk = rebalance(small_cnn, "4", scales=torch.tensor([1 / 64, 1, 1, 32, 1, 1, 1, 1 / 16],  # live channels
                                                           dtype=torch.float64))
    assert neuron_balance(shrunk, x, "4").statistic > neuron_balance(small_cnn, x, "4").statistic + 1.0
    restored = rebalance(shrunk, "4", like=small_cnn, data=x, exact=True)
    assert torch.equal(restored[3].weight, small_cnn[3].weight)  # the exact inverse: powers of two
    assert torch.equal(restored[7].weight, small_cnn[7].weight)
    assert neuron_balance(restored, x, "4").statistic == pytest.approx(neuron_balance(small_cnn, x, "4").statistic)


def test_rebalance_refuses_what_the_symmetry_does_not_cover(small_cnn, cnn_inputs):
    with pytest.raises(ValueError, match="exactly one of scales="):
        rebalance(small_cnn, "4")
    with pytest.raises(ValueError, match="like= needs data="):
        rebalance(small_cnn, "4", like=small_cnn)
    with pytest.raises(ValueError, match="8 positive factors"):
        rebalance(small_cnn, "4", scales=torch.ones(3))
    with pytest.raises(ValueError, match="8 positive factors"):
        rebalance(small_cnn, "4", scales=-torch.ones(8))
    sigmoid = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)).double().eval()
    with pytest.raises(ValueError, match="Sigmoid.*does not commute"):
        rebalance(sigmoid, "0", scales=torch.ones(3))
    with pytest.raises(ValueError, match="no Conv/Linear layer after it"):
        rebalance(small_cnn, str(len(small_cnn) - 1), scales=torch.ones(10))


def test_like_matches_any_reference_balance_closely_without_rounding(small_cnn, cnn_inputs):
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    skewed = rebalance(small_cnn, "4", scales=torch.linspace(0.05, 20.0, 8, dtype=torch.float64))
    restored = rebalance(skewed, "4", like=small_cnn, data=x)
    s0, g0 = channel_balance(small_cnn, x, "4")
    s1, g1 = channel_balance(restored, x, "4")
    alive = (s0 > 0) & (g0 > 0)
    torch.testing.assert_close(torch.log10(s1 / g1)[alive], torch.log10(s0 / g0)[alive])
    assert torch.equal(restored(x).argmax(1), small_cnn(x).argmax(1))
