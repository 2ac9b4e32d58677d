"""Offline training of emotrack's speech and music emotion models.

Rooms: ``data/`` (corpora, manifests, mixing, rendering), ``nets/`` (architectures), the one
training loop (:mod:`.config` recipes, :mod:`.loop`, :mod:`.evaluate`, :mod:`.export`, :mod:`.metrics`),
``experiments/`` (protocols, systems, runner) and ``reports/`` (RESULTS.md, MODELS.md).  Importing
this package (or any module in it except inside functions) never imports TensorFlow;
``python -m training.train speech|music`` and ``python -m training.recipe`` do the work.
"""
