"""emotrack engines: inference backends and the shipped default models."""
