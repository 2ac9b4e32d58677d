"""Reports: documents generated from saved results, never edited by hand: docs/RESULTS.md from
docs/results/*.json (:mod:`.results`, prose in ``results_template.md``) and docs/MODELS.md from
the model cards (:mod:`.models`, prose in ``models_preamble.md``)."""
