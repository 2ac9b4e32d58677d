"""Where ``emotrack batch`` tasks run: one after another in this process, or on a Ray cluster, a few
per CPU in flight (:mod:`streamer.ops.batch`)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque
from typing import Optional

from ..errors import BackendError
from .batch_tasks import ChunkResult, ChunkTask, DecodeResult, RunConfig, decode_segments, load_models, run_chunk

class LocalExecutor:
    """Runs whole-file tasks one after another in this process (retrying unexpected errors)."""

    parallelism = 1
    description = "1 process"
    chunks = False  # splitting a file only helps when its chunks run in parallel

    def __init__(self, cfg: RunConfig, retries: int):
        self.cfg, self.retries = cfg, retries
        self.queue: deque = deque()
        load_models(cfg)  # a backend that cannot run here fails now, not once per file

    def submit(self, task: ChunkTask, samples=None) -> None:
        self.queue.append(task)

    def pending(self) -> int:
        return len(self.queue)

    def next_done(self):
        """(kind, task(s), result, chunk arrays): kind is "chunk" here."""
        task = self.queue.popleft()
        for _ in range(self.retries + 1):
            try:
                return "chunk", task, run_chunk(task, self.cfg), None
            except Exception as exc:  # a bug or a transient fault: try again, then report
                err = f"{type(exc).__name__}: {exc}"
        return "chunk", task, ChunkResult(task.name, task.index, exit_code=1,
                                          error=f"failed {self.retries + 1} times: {err}"), None

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs decode and pipeline tasks on Ray, a few per CPU in flight.

    A decode task returns its chunks' arrays as separate objects owned by this
    driver: a chunk task retried after its worker died finds its array still
    there (or Ray rebuilds it by running the decode again).
    """

    chunks = True

    def __init__(self, cfg: RunConfig, retries: int, *, address: str, workers: Optional[int],
                 gpu_fraction: float):
        try:
            import ray
        except ImportError:
            raise BackendError("Ray is not installed: pip install 'emotrack[batch]', or pass --no-ray") from None
        self.ray = ray
        self.started = False
        self.queue: deque = deque()
        self.running: dict = {}
        if not ray.is_initialized():
            import logging

            opts = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            on_term = signal.getsignal(signal.SIGTERM)
            try:
                if address == "local":
                    ray.init(num_cpus=workers or os.cpu_count() or 1, **opts)
                else:  # workers of a cluster started elsewhere get emotrack's one BLAS thread too
                    ray.init(address=address, runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}}, **opts)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError... from Ray
                raise BackendError(f"cannot start or reach a Ray cluster ({address}): "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self.started = True
            if callable(on_term):  # Ray's own SIGTERM handler would end the driver without shutting down
                with contextlib.suppress(ValueError):  # (only the main thread may set handlers)
                    signal.signal(signal.SIGTERM, on_term)
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 1))
        gpus = float(res.get("GPU", 0))
        self.parallelism = max(1, cpus // max(1, cfg.threads or 1))
        num_gpus = 0.0
        if cfg.backend == "tensorrt" or (cfg.backend == "auto" and gpus > 0):
            if gpus <= 0:
                self.close()
                raise BackendError("--backend tensorrt: the Ray cluster has no GPU; use --backend onnxruntime "
                                   "or a cluster with NVIDIA GPUs")
            num_gpus = gpu_fraction
            self.parallelism = max(self.parallelism, int(gpus / gpu_fraction))
        self.description = (f"Ray, {cpus} CPU" + (f", {gpus:g} GPU ({num_gpus:g} per task)" if num_gpus else "")
                            + (" (local cluster)" if self.started and address == "local" else ""))
        retry = dict(max_retries=retries, retry_exceptions=True)
        self.remote_chunk = ray.remote(run_chunk).options(num_cpus=cfg.threads or 1, num_gpus=num_gpus, **retry)
        self.remote_decode = ray.remote(decode_segments)
        self.decode_options = dict(num_cpus=1, **retry)
        self.cfg_ref = ray.put(cfg)
        self.retries = retries

    def submit(self, task: ChunkTask, samples=None) -> None:
        if samples is None:
            self.queue.append(("chunk", task, None))
        else:  # chunks of a decoded file first: their arrays hold memory
            self.queue.appendleft(("chunk", task, samples))

    def submit_decode(self, tasks: list[ChunkTask], min_total: int) -> None:
        self.queue.append(("decode", tasks, min_total))

    def pending(self) -> int:
        return len(self.queue) + len(self.running)

    def next_done(self):
        """(kind, task(s), result, chunk arrays): kind "decode" (with the arrays' refs) or "chunk"."""
        ray = self.ray
        while self.queue and len(self.running) < 2 * self.parallelism:
            kind, what, extra = self.queue.popleft()
            if kind == "decode":
                refs = self.remote_decode.options(num_returns=len(what) + 1, **self.decode_options).remote(what, extra)
                self.running[refs[0]] = (kind, what, refs[1:])
            else:
                self.running[self.remote_chunk.remote(what, self.cfg_ref, extra)] = (kind, what, None)
        done, _ = ray.wait(list(self.running), num_returns=1)
        kind, what, segments = self.running.pop(done[0])
        try:
            return kind, what, ray.get(done[0]), segments
        except ray.exceptions.RayError as exc:
            text = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            why = f"failed after {self.retries} retries ({type(exc).__name__}): {text[-1] if text else ''}"
            first = what[0] if kind == "decode" else what
            fail = DecodeResult(first.name) if kind == "decode" else ChunkResult(first.name, first.index)
            fail.error, fail.exit_code = why, 1
            return kind, what, fail, None

    def close(self) -> None:
        # Tasks still running are left alone (ray.cancel racing their completion crashed Ray 2.60's
        # driver); shutting down a cluster we started ends them, in a session we joined they finish.
        self.running.clear()
        self.queue.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False
