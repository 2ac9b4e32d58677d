"""emotrack streamer: sources, windowing, features, the pipeline, publishing, CLI."""

__version__ = "0.1.0"
