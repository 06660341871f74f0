"""Neuron-level interpretation and its attacks (Nanfack et al. 2024, "Adversarial Attacks on the
Interpretation of Neuron Activation Maximization", AAAI).

* Recording (:mod:`~veneer.neurons.record`): per-channel activations of any named layer (Eq. 1).
* Dataset-based visualisation (:mod:`~veneer.neurons.topk`): :func:`top_k`, :func:`activations`.
* Synthetic visualisation (:mod:`~veneer.neurons.visualize`): :func:`visualize`.
* Attacks (:mod:`~veneer.neurons.attacks`): :class:`PushDown` (Eq. 3), :class:`PushUp` (Eq. 4),
  :class:`Fairwash` (Eq. 5), each a fine-tune on ``alpha L_A + (1 - alpha) L_M`` (Eq. 2) on the shared engine
  (:mod:`veneer.finetune`), returning a :class:`~veneer.finetune.FineTuneResult`.
* Synthetic visualisations that lie: :class:`Slingshot` (Bareeva et al. 2025, the gradient slingshot, on the same
  engine), :func:`silent_unit` and :func:`fooling_circuit` (Geirhos et al. 2024, constructions returning a new
  model; :mod:`~veneer.neurons.constructions`).
* Metrics (:mod:`~veneer.neurons.metrics`): Kendall-tau, Kendall-tau-W, embedding-delta/-W, top-k and
  label overlap, group fairness of neurons.
"""

from veneer.neurons.attacks import Fairwash, NeuronAttack, PushDown, PushUp
from veneer.neurons.metrics import (
    LayerEncoder, NeuronComparison, compare_activations, compare_models, embed, embedding_delta,
    embedding_delta_matrix, group_fairness, independent_encoder, label_overlap, label_share,
    penultimate_encoder, ranking_tau, tau_matrix, topk_indices, topk_overlap, whack_a_mole_embedding,
    whack_a_mole_tau,
)
from veneer.neurons.rebalance import channel_balance, rebalance
from veneer.neurons.record import ActivationRecorder, channel_scalar, default_layer, record, resolve_layers
from veneer.neurons.topk import ChannelTopK, activations, top_k, top_k_layers
from veneer.neurons.visualize import (OPTIMIZERS, PARAMETRIZATIONS, FourierImage, PixelImage, channel_decorrelation,
                                      make_image, probe_layer, random_affine, total_variation, visualize)
from veneer.neurons.slingshot import (TARGET_SHAPES, Slingshot, SlingshotLoss, is_output_layer, target_image,
                                      unit_activation, unit_class)
from veneer.neurons.constructions import (Construction, fooling_circuit, silent_unit, train_detector,
                                          visualization_inputs)

__all__ = [
    "ActivationRecorder", "channel_scalar", "default_layer", "record", "resolve_layers",
    "ChannelTopK", "top_k", "top_k_layers", "activations",
    "FourierImage", "channel_decorrelation", "random_affine", "total_variation", "visualize",
    "PixelImage", "PARAMETRIZATIONS", "OPTIMIZERS", "make_image", "probe_layer",
    "Slingshot", "SlingshotLoss", "TARGET_SHAPES", "target_image", "unit_activation", "unit_class", "is_output_layer",
    "Construction", "silent_unit", "fooling_circuit", "train_detector", "visualization_inputs",
    "NeuronAttack", "PushDown", "PushUp", "Fairwash",
    "ranking_tau", "tau_matrix", "whack_a_mole_tau", "embedding_delta", "embedding_delta_matrix",
    "whack_a_mole_embedding", "topk_indices", "topk_overlap", "label_overlap", "label_share",
    "LayerEncoder", "penultimate_encoder", "independent_encoder", "embed", "NeuronComparison",
    "compare_activations", "compare_models", "group_fairness", "channel_balance", "rebalance",
]
