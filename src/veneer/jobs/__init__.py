"""What each ``veneer`` command does, as functions that take plain values (models, data, numbers, paths, a
:class:`~veneer.runs.RunDir`), write a run directory's files and return a typed result
(:mod:`~veneer.jobs.results`: the run's measures for ``metrics.json``, its kind, and apart from them what is not
JSON, e.g. the fine-tuned model). The CLI (:mod:`veneer.cli`) only parses arguments, hands a job to its one
lifecycle (``veneer.cli.common.run_job``) and prints; experiments and benchmarks call the jobs directly.

* :mod:`~veneer.jobs.train`: a bundled model trained on its bundled dataset;
* :mod:`~veneer.jobs.explain`: attributions of several methods for a few inputs;
* :mod:`~veneer.jobs.attack`: input-level attacks and the Fig.-3 sweep;
* :mod:`~veneer.jobs.manipulate`: model-level manipulation, the scaffolding attack and the evaluation;
* :mod:`~veneer.jobs.neurons`: top-k, synthetic visualisation and the neuron-level attacks;
* :mod:`~veneer.jobs.influence`: influence scores and the influence attack's sweep;
* :mod:`~veneer.jobs.audit`: the audit's verdict and files;
* :mod:`~veneer.jobs.demo`: the main job on bundled data, a section per level.
"""
