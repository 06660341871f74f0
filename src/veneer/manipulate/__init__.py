"""Model-level manipulation: fine-tune a model so that its explanations lie while its predictions stay the same
(thesis "Training Neural Networks With Manipulated Explanations"; Heo et al. 2019; Dimanov et al. 2020).

``manipulate(model, explainer, objective, data, keep=...)`` runs the fine-tuning (:mod:`.train`), the objectives
(:mod:`.objectives`) say what the explanations should show, the keep losses (:mod:`.keep`) hold the
predictions, and ``evaluate(original, manipulated, objective, data, explainers)`` measures the result and its
transfer to other explanation methods and to noise inputs (:mod:`.evaluate`). :class:`Scaffolding` hides a biased
model from LIME and KernelSHAP behind an out-of-distribution detector (Slack et al. 2020; :mod:`.scaffolding`).
"""

from veneer.manipulate.evaluate import Evaluation, evaluate, gaussian_noise_like, prediction_agreement
from veneer.manipulate.keep import KEEP_LOSSES, keep_loss
from veneer.manipulate.objectives import (OBJECTIVES, PICTURES, AttackBatch, CenterOfMass, ClassSwap,
                                          FeatureSuppress, Location, Objective, TargetMap, TopKSuppress,
                                          make_objective, normalized_heatmap, picture, two_digit_images)
from veneer.manipulate.scaffolding import (FeatureRule, ScaffoldedModel, Scaffolding, ScaffoldingResult,
                                           add_random_features, explanation_ranks, feature_rule, rank_shares,
                                           slack_case, top_k_share)
from veneer.manipulate.train import (ManipulationResult, distributed_context, lambda_to_alpha, load_checkpoint,
                                     manipulate, save_checkpoint, select_trainable)

__all__ = ["manipulate", "ManipulationResult", "lambda_to_alpha", "select_trainable", "distributed_context",
           "save_checkpoint", "load_checkpoint", "Objective", "AttackBatch", "CenterOfMass", "TargetMap",
           "Location", "TopKSuppress", "ClassSwap", "FeatureSuppress", "OBJECTIVES", "make_objective",
           "PICTURES", "picture", "normalized_heatmap", "two_digit_images", "KEEP_LOSSES", "keep_loss",
           "evaluate", "Evaluation", "prediction_agreement", "gaussian_noise_like",
           "Scaffolding", "ScaffoldingResult", "ScaffoldedModel", "FeatureRule", "feature_rule", "add_random_features",
           "explanation_ranks", "rank_shares", "top_k_share", "slack_case"]
