"""What each ``veneer`` command does, as functions that take plain values (models, data, numbers, paths) and
write a run directory. The CLI (:mod:`veneer.cli`) only parses arguments, calls these and prints; experiments
and benchmarks call them directly.

* :mod:`~veneer.jobs.explain`: attributions of several methods for a few inputs;
* :mod:`~veneer.jobs.attack`: input-level attacks and the Fig.-3 sweep;
* :mod:`~veneer.jobs.manipulate`: model-level manipulation and its evaluation;
* :mod:`~veneer.jobs.neurons`: top-k, synthetic visualisation and the neuron-level attacks;
* :mod:`~veneer.jobs.influence`: influence scores and the influence attack's sweep;
* :mod:`~veneer.jobs.demo`: the main job on bundled data, a section per level.
"""
