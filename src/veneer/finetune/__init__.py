"""The fine-tuning engine shared by the model level (:mod:`veneer.manipulate`) and the neuron level
(:mod:`veneer.neurons`).

Every fine-tuning attack minimises

    alpha * L_attack + (1 - alpha) * L_keep

(thesis "Training Neural Networks With Manipulated Explanations", Ch. 3; Heo et al. 2019, "Fooling Neural
Network Interpretations via Adversarial Model Manipulation", Eq. 1; Nanfack et al. 2024, "Adversarial Attacks
on the Interpretation of Neuron Activation Maximization", Eq. 2). The thesis and Heo et al. write
``L_keep + lambda * L_attack``; dividing by ``1 + lambda`` (a rescaled learning rate) gives
``alpha = lambda / (1 + lambda)`` (:func:`lambda_to_alpha`).

A :class:`FineTuner` is configured once and called on data; it fine-tunes a **copy** of the model it was built
on (the model passed in is never changed) and returns a :class:`FineTuneResult`. ``L_attack`` is an
:class:`AttackLoss` object the engine is given per call (``FineTuner(model, ...)(data, loss=my_loss)``; each
attack builds its own from the call's inputs, ``attack(data, **inputs)``); the engine does the rest:

* ``L_keep`` (:data:`KEEP_LOSSES`): ``"ce"`` (labels), ``"kl"`` (distillation to the original model's softmax,
  with a ``temperature``), ``"prob_mse"``, ``"argmax_ce"`` (the original model's predicted labels);
* Softplus(``softplus_beta``) in place of ReLU while training (ReLU has no useful second derivative, thesis
  Sec. 3.2.2), ReLU back on the returned model;
* ``trainable`` module-name prefixes (the rest frozen), Adam at ``lr``;
* a seeded sampler over the data (epochs of shuffled batches), ``epochs`` or ``steps``, ``max_steps`` to stop
  early; atomic checkpoints every ``checkpoint_every`` steps (weights, optimiser, RNG states, the attack's own
  state) and a bit-identical ``resume``; Ctrl-C writes a checkpoint before it stops;
* data parallelism under ``torchrun`` (each rank takes its share of every global batch through a
  ``DistributedSampler``; gradients averaged with one all-reduce per step. The DDP wrapper itself is not
  used: explainers call the unwrapped model several times per step, including a double backward, which DDP's
  reducer does not support);
* the optional recalibration phase (an extension): ``recalibrate_steps`` steps of ``L_keep`` alone on the
  parameters ``L_attack`` does not depend on (found by autograd);
* an optional behaviour budget (:class:`BehaviourBudget`): with ``min_agreement`` the weight between attack
  and keep becomes a Lagrange multiplier on "the fine-tuned model predicts the original model's label on at
  least ``min_agreement`` of the validation inputs", updated by dual ascent every ``check_every`` steps, and
  the run returns the best iterate that meets the budget (the history's ``phase: "check"`` row 0 and the
  ``val_*`` / ``multiplier`` keys of every checked step record it);
* the adaptive attacker (:mod:`veneer.finetune.evasion`): ``evade`` names audit tests whose differentiable
  surrogates are held at the original model's values (``evade_weight * sum (s - s_original)^2`` joins
  ``L_attack``; ``register_evasion`` adds a surrogate for a user's test; the history's ``evade.<name>`` keys);
* a progress bar (:func:`veneer.progress.progress_bar`) and one history schema: ``{"step", "epoch", "phase", "loss", "attack", "keep"}``
  (``phase`` is ``"attack"`` or ``"recalibrate"``; ``attack`` is ``None`` in the recalibration phase).
"""

from veneer.finetune.attack_loss import AttackLoss, StepOutput
from veneer.finetune.budget import BehaviourBudget, wilson_lower_bound
from veneer.finetune.checkpoint import CHECKPOINT, checkpoint_step, load_checkpoint, save_checkpoint
from veneer.finetune.distributed import average_gradients, distributed_context
from veneer.finetune.engine import FineTuner, FineTuneResult, Interrupted, select_trainable
from veneer.finetune.evasion import (EVADE_WEIGHT, Evasion, evasion_surrogate, register_evasion, registered_evasions,
                                     soft_rank)
from veneer.finetune.losses import (KEEP_LOSSES, cross_entropy_keep, distillation_keep, keep_loss, lambda_to_alpha,
                                    mixup_inputs, original_label_keep, probability_mse_keep)

__all__ = ["AttackLoss", "StepOutput", "FineTuner", "FineTuneResult", "Interrupted", "BehaviourBudget",
           "wilson_lower_bound", "KEEP_LOSSES", "keep_loss", "lambda_to_alpha", "mixup_inputs", "cross_entropy_keep",
           "distillation_keep", "probability_mse_keep", "original_label_keep", "select_trainable", "CHECKPOINT",
           "save_checkpoint", "load_checkpoint", "checkpoint_step", "distributed_context", "average_gradients",
           "EVADE_WEIGHT", "Evasion", "register_evasion", "registered_evasions", "evasion_surrogate", "soft_rank"]
