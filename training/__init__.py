"""Offline training of emotrack's speech and music emotion models.

Importing this package (or any module in it except inside functions) never
imports TensorFlow; ``python -m training.train speech|music`` does the work.
"""
