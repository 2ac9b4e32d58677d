"""Nets: the Keras architectures a recipe names (:mod:`.archs`); TensorFlow is imported inside
the builders only."""
