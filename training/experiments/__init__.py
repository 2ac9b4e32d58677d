"""Experiments: evaluation protocols and their folds (:mod:`.protocols`), the registered systems
(:mod:`.systems`) and the runner that fits every system on every fold (:mod:`.runner`).
``python -m training.results`` is the command line."""
