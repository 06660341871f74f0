"""Audit: can this model's explanations be trusted? Detect manipulated models, with a calibrated verdict.

Each test is a function usable on its own, returning a :class:`TestResult` (statistic: larger = more
suspicious, per-method components, evidence):

* input level -- :func:`fragility_profile` (Ghorbani et al. 2019, Alg. 1), :func:`influence_fragility`
  (Ghorbani et al. Sec. 3, Fig. 4; Koh & Liang 2017), :func:`hessian_geometry` (Ghorbani et al. Sec. 5;
  Dombrowski et al. 2019, Thm. 2);
* sanity -- :func:`noise_inputs` (thesis 4.1), :func:`weight_noise` (thesis 4.2),
  :func:`parameter_randomization` (Adebayo et al. 2018);
* fidelity -- :func:`faithfulness` (Samek et al. 2017; Petsiuk et al. 2018), :func:`cross_method_agreement`;
* defences as evidence -- :func:`beta_smoothing` (Dombrowski et al. 2019), :func:`tangent_space_projection`
  (Anders et al. 2020);
* neuron level -- :func:`neuron_visualization`, :func:`neuron_balance`, :func:`neuron_group_fairness` (Nanfack
  et al. 2024);
* with a reference model -- :func:`reference_comparison`.

:class:`Audit` runs them, scores each against reference models or clean twins (:class:`Calibration`) and
combines the scores into a verdict (``clean``/``suspicious``/``manipulated``)::

    result = Audit(model, effort="fast")(train_data, eval_data)
    result.verdict, result.to_json()

In the audit each test is an :class:`AuditTest` (name, meaning, source, tolerance, own options per effort level,
``applies``, ``run``; :mod:`veneer.audit.registry`); the functions above are registered in that order as the
built-in tests (:mod:`veneer.audit.builtin`). :func:`register_test` adds a test written anywhere, :func:`unregister_test` removes
one, :func:`registered_tests` lists them; ``Audit(tests=[...])`` also takes unregistered instances.
"""

import veneer.audit.builtin  # noqa: F401  (registers the built-in tests first, in their order)
from veneer.audit.base import TestResult, build_explainers, default_methods, flat_maps
from veneer.audit.calibration import (COMPONENT_TOLERANCE_FACTOR, Z_FLAG, Calibration, combined_z, inherited_state,
                                      nominal_false_positive_rate, reinitialized, train_twins, verdict)
from veneer.audit.defences import beta_smoothing, project_tangent, tangent_basis, tangent_space_projection
from veneer.audit.fidelity import agreement_matrix, cross_method_agreement, deletion_insertion, faithfulness
from veneer.audit.geometry import fragility_profile, hessian_geometry, top_hessian_eigen
from veneer.audit.influence import influence_fragility
from veneer.audit.neuron import neuron_balance, neuron_group_fairness, neuron_visualization
from veneer.audit.visualization import visualization_consistency
from veneer.audit.reference import parameter_shift, reference_comparison
from veneer.audit.registry import (EFFORTS, AuditContext, AuditTest, register_test, registered_tests,
                                   unregister_test)
from veneer.audit.run import (Audit, AuditResult, __getattr__, audit,  # noqa: F401  (TESTS, BUDGETS)
                              run_tests, skipped_tests)
from veneer.audit.scaffolding import scaffolding_audit  # noqa: F401  (registers the scaffolding test)
from veneer.audit.sanity import (add_weight_noise, mean_pairwise_correlation, noise_inputs, parameter_randomization,
                                 weight_noise)

__all__ = ["TestResult", "build_explainers", "default_methods", "flat_maps", "COMPONENT_TOLERANCE_FACTOR",
           "Z_FLAG", "Calibration", "combined_z", "inherited_state",
           "nominal_false_positive_rate", "reinitialized", "train_twins", "verdict", "beta_smoothing",
           "project_tangent", "tangent_basis", "tangent_space_projection", "agreement_matrix",
           "cross_method_agreement", "deletion_insertion", "faithfulness", "fragility_profile", "hessian_geometry",
           "influence_fragility", "top_hessian_eigen", "neuron_balance", "neuron_group_fairness",
           "neuron_visualization", "parameter_shift", "reference_comparison", "EFFORTS", "TESTS", "Audit",
           "AuditContext", "AuditResult", "AuditTest", "audit", "register_test", "registered_tests",
           "unregister_test", "run_tests", "skipped_tests",
           "add_weight_noise", "mean_pairwise_correlation", "noise_inputs", "parameter_randomization",
           "weight_noise"]
