"""Fragility of sample-importance explanations (influence functions).

:func:`influence_fragility` -- Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile",
Sec. 3 ("Influence functions") and Fig. 4: a small label-keeping perturbation of a test image reshuffles the
ranking of the training images by their influence (Koh & Liang 2017, "Understanding Black-box Predictions via
Influence Functions", Eq. 2) on its prediction, and does so more than a random perturbation of the same size.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.attacks import influence_sweep
from veneer.audit.base import TestResult, predictions
from veneer.checks import check_eval_mode, check_positive, check_tensor
from veneer.data import as_labeled
from veneer.explain import Influence
from veneer.explain.influence import last_layer


def influence_fragility(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train_data, eps: float = 0.05,
                        params: list[str] | None = None, damping: float = 0.01, top: int = 3, k: int = 5,
                        steps: int = 1, input_range=(0.0, 1.0), seed: int = 0) -> TestResult:
    """Ghorbani et al. (2019), Sec. 3 / Fig. 4 as an audit test: on the images of ``x`` that ``model`` classifies
    correctly (labels ``y``), the influence of every sample of ``train_data`` (Koh & Liang 2017, Eq. 2;
    :class:`veneer.explain.Influence`, exact inverse Hessian with ``damping``, over the parameters of ``params``,
    default the last layer with parameters, :func:`veneer.explain.influence.last_layer`, as both papers) before
    and after the sign attack (:class:`veneer.attacks.InfluenceAttack`: ``steps`` signed steps of size ``eps``
    lowering the influence of the ``top`` most influential training images; labels kept) and after the
    random-sign perturbation of the same ``eps`` (:func:`veneer.attacks.influence_sweep`).

    Components (larger = more fragile): ``spearman`` = 1 - the mean Spearman rank correlation of the influence
    scores over the training set before/after the attack, and ``topk`` = 1 - the mean share of the ``k`` most
    influential training images kept. Evidence: the same for random sign, the attack's margin over random sign
    (``spearman_gap``, ``topk_gap``: random minus attack), label-kept rates, how many images and training
    samples were used and the parameters. ``train_data``: anything :func:`veneer.data.as_labeled` takes.
    """
    start = time.perf_counter()
    x = check_tensor("x", x, ndim=4)
    check_eval_mode(model)
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),) or y.dtype.is_floating_point:
        raise ValueError(f"y must be a ({len(x)},) integer tensor of labels of x, got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    check_positive("k", k, integer=True)
    train_data = as_labeled(train_data, "train_data")
    if k > len(train_data):
        raise ValueError(f"k must be at most the number of training samples ({len(train_data)}), got {k}")
    correct = predictions(model, x) == y.to(x.device)
    if not bool(correct.any()):
        raise ValueError("model classifies none of the images of x correctly (influence fragility is measured on "
                         "correctly classified images)")
    params = [last_layer(model)] if params is None else params
    influence = Influence(model, train_data, params=params, method="exact", damping=damping)
    rows, _ = influence_sweep(model, influence, x[correct], y.to(x.device)[correct], [eps], top=top, k=k,
                              steps=steps, input_range=input_range, seed=seed)
    attack, random = rows
    topk = f"top{k}_intersection"
    evidence = {"eps": float(eps), "steps": steps, "top": top, "k": k, "damping": float(damping), "params": params,
                "images": int(correct.sum()), "train_samples": len(train_data),
                "spearman": {"attack": attack["spearman"], "random": random["spearman"]},
                "topk_intersection": {"attack": attack[topk], "random": random[topk]},
                "spearman_gap": random["spearman"] - attack["spearman"], "topk_gap": random[topk] - attack[topk],
                "label_kept": {"attack": attack["label_kept_rate"], "random": random["label_kept_rate"]}}
    return TestResult("influence_fragility", {"spearman": 1 - attack["spearman"], "topk": 1 - attack[topk]},
                      evidence, time.perf_counter() - start)
