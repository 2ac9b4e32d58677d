"""emotrack streamer: sources, windowing, features, the pipeline, publishing, CLI."""

import os

# The streaming path multiplies small matrices (a few hundred frames by the mel
# filterbank) once per block.  A multi-threaded BLAS makes those 40x slower as
# soon as the other core is busy (measured: 0.2 ms vs 8 ms per call), so the
# streamer asks for one BLAS thread unless the user set it.  This only takes
# effect when emotrack is imported before numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
