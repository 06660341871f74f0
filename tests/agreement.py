"""Helpers shared by the tests that compare veneer with independent implementations (Captum, formulas)."""

import torch


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def relative_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """max |actual - reference| / max |reference|."""
    scale = reference.abs().max()
    assert scale > 0, "the reference is identically zero: the comparison would prove nothing"
    return ((actual - reference).abs().max() / scale).item()


class AgreementLog:
    """Fails a comparison whose relative error exceeds ``rtol`` and remembers the worst error per method."""

    def __init__(self, rtol: float):
        self.rtol = rtol
        self.worst: dict[str, float] = {}

    def check(self, method: str, actual: torch.Tensor, reference: torch.Tensor, rtol: float | None = None) -> None:
        assert actual.shape == reference.shape, (tuple(actual.shape), tuple(reference.shape))
        assert actual.dtype == torch.float64 and torch.isfinite(actual).all()
        err = relative_error(actual, reference.to(actual.dtype))
        self.worst[method] = max(self.worst.get(method, 0.0), err)
        assert err <= (self.rtol if rtol is None else rtol), f"{method}: relative error {err:.3g}"

    def report(self, title: str) -> None:
        if self.worst:
            print(f"\nmax relative error against {title}:")
            for method, err in sorted(self.worst.items()):
                print(f"  {method:<40s} {err:.3e}")
