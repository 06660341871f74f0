"""Input-level attacks on explanations: a small perturbation keeps the label and moves the saliency map.

Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile": :class:`RandomSign` (baseline),
:class:`TopK`, :class:`MassCenter`, :class:`TargetRegion`, :class:`InfluenceAttack` (on influence functions);
Dombrowski et al. (2019), "Explanations can be manipulated and geometry is to blame": :class:`TargetMapAttack`.
Torchattacks-style::

    attack = MassCenter(model, Gradient(model), eps=0.1, steps=300)
    x_adv = attack(x)          # label kept, ||x_adv - x||_inf <= eps, inside input_range
    attack.result.dissimilarity, attack.result.label_kept, attack.result.iterations, attack.result.linf

:func:`sweep` runs the Fig. 3 grid (budgets x attacks x explainers) and :func:`explanation_change` gives the
paper's metrics (Spearman, top-k intersection, center-of-mass shift).
"""

from veneer.attacks.base import AttackResult, ExplanationAttack, IterativeAttack, saliency_map
from veneer.attacks.dombrowski import TargetMapAttack
from veneer.attacks.evaluation import explanation_change
from veneer.attacks.ghorbani import MassCenter, RandomSign, TargetRegion, TopK
from veneer.attacks.influence import InfluenceAttack, influence_change, influence_sweep
from veneer.attacks.sweep import ATTACKS, Outcome, attack_images, make_attack, sweep

__all__ = ["ExplanationAttack", "IterativeAttack", "AttackResult", "RandomSign", "TopK", "MassCenter",
           "TargetRegion", "TargetMapAttack", "saliency_map", "explanation_change", "ATTACKS", "make_attack",
           "attack_images", "Outcome", "sweep", "InfluenceAttack", "influence_change", "influence_sweep"]
