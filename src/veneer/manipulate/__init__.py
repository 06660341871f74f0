"""Model-level manipulation: fine-tune a model so that its explanations lie while its predictions stay the same
(thesis "Training Neural Networks With Manipulated Explanations"; Heo et al. 2019; Dimanov et al. 2020).

``Manipulation(model, explainer, objective, keep=...)(data)`` fine-tunes a copy of the model (:mod:`.manipulation`,
on the shared engine :mod:`veneer.finetune`), the objectives (:mod:`.objectives`) say what the explanations
should show, and ``evaluate(original, manipulated, objective, data, explainers)`` measures the result and its
transfer to other explanation methods and to noise inputs (:mod:`.evaluate`). :class:`Scaffolding` hides a biased
model from LIME and KernelSHAP behind an out-of-distribution detector (Slack et al. 2020; :mod:`.scaffolding`).
``architectural(model, name, x)`` builds a manipulation that lives in the architecture rather than the weights
(a term every logit shares, a small high-frequency wave, a router to a decoy; :mod:`.architectural`).
"""

from veneer.finetune import KEEP_LOSSES, FineTuneResult, keep_loss, lambda_to_alpha
from veneer.manipulate.evaluate import Evaluation, evaluate, gaussian_noise_like, prediction_agreement
from veneer.manipulate.manipulation import Manipulation
from veneer.manipulate.group_rates import GroupRates
import veneer.manipulate.evasions  # noqa: E402,F401  (registers the fragility evasion surrogate)
from veneer.manipulate.objectives import (OBJECTIVES, PICTURES, AttackBatch, CenterOfMass, ClassSwap,
                                          FeatureSuppress, Location, Objective, TargetMap, TopKSuppress,
                                          make_objective, normalized_heatmap, picture, two_digit_images)
from veneer.manipulate.scaffolding import (FeatureRule, ScaffoldedModel, Scaffolding, ScaffoldingResult,
                                           add_random_features, explanation_ranks, feature_rule, rank_shares,
                                           slack_case, top_k_share)
from veneer.manipulate.architectural import (ARCHITECTURAL, Architectural, DecoyMap, HighFrequency,
                                             HighFrequencyModel, Router, RouterModel, SharedTerm, SharedTermModel,
                                             architectural, class_directions, gradient_scale,
                                             register_architectural, term_cosine, unregister_architectural)

__all__ = ["Manipulation", "GroupRates", "FineTuneResult", "lambda_to_alpha", "Objective", "AttackBatch", "CenterOfMass",
           "TargetMap", "Location", "TopKSuppress", "ClassSwap", "FeatureSuppress", "OBJECTIVES", "make_objective",
           "PICTURES", "picture", "normalized_heatmap", "two_digit_images", "KEEP_LOSSES", "keep_loss",
           "evaluate", "Evaluation", "prediction_agreement", "gaussian_noise_like",
           "Scaffolding", "ScaffoldingResult", "ScaffoldedModel", "FeatureRule", "feature_rule", "add_random_features",
           "explanation_ranks", "rank_shares", "top_k_share", "slack_case",
           "Architectural", "SharedTerm", "HighFrequency", "Router", "SharedTermModel", "HighFrequencyModel",
           "RouterModel", "DecoyMap", "ARCHITECTURAL", "register_architectural", "architectural",
           "class_directions", "gradient_scale", "term_cosine", "unregister_architectural"]
