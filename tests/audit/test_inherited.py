"""What a clean twin copies from the audited model (veneer.audit.inherited_state): a manipulation placed there
is in every twin, so the audit must name it instead of calling the model clean."""

from __future__ import annotations

import torch
from torch import nn

from veneer.audit import inherited_state, reinitialized, train_twins
from veneer.data import LabeledData


class Shifted(nn.Module):
    """A user's model with a manipulation outside the learned weights: a stored direction (a parameter of a
    module without ``reset_parameters``), a buffer and a plain tensor attribute, all used by the forward."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        self.direction = nn.Parameter(torch.linspace(-1, 1, 6), requires_grad=False)
        self.register_buffer("offset", torch.ones(3))
        self.scale = torch.tensor(1e-3)

    def forward(self, x):
        return self.body(x) + self.scale * torch.sin(1e5 * x @ self.direction)[:, None] + 0 * self.offset


def test_inherited_state_names_what_every_twin_copies():
    model = Shifted().eval()
    found = inherited_state(model)
    assert found["parameters"] == ["direction"]
    assert found["buffers"] == ["offset"]
    assert found["tensors"] == ["scale"]
    assert found["forward_code"] == [f"{__name__}.Shifted"]
    # and they are indeed copied: the twin's learned layers change, the manipulation does not
    twin = reinitialized(model, seed=1)
    assert not torch.equal(twin.body[0].weight, model.body[0].weight)
    assert torch.equal(twin.direction, model.direction) and torch.equal(twin.offset, model.offset)


def test_a_standard_architecture_inherits_nothing(small_cnn):
    assert inherited_state(small_cnn) == {"parameters": [], "buffers": [], "tensors": [], "forward_code": []}


def test_train_twins_records_the_inherited_state():
    generator = torch.Generator().manual_seed(0)
    data = LabeledData(torch.randn(64, 6, generator=generator), torch.randint(0, 3, (64,), generator=generator),
                       classes=["a", "b", "c"], name="random")
    _, details = train_twins(Shifted().eval(), data, count=1, steps=2, batch_size=32)
    assert details["inherited"]["parameters"] == ["direction"]
    assert details["inherited"]["forward_code"] == [f"{__name__}.Shifted"]
