"""TensorRT: engine cache, profiles, backend selection, the engines CLI, the ONNX op table.

CPU tests run everywhere.  Tests marked ``gpu`` need TensorRT 10, pycuda and an
NVIDIA GPU; elsewhere they skip, saying why.  The CPU tests of the backend's
buffer and stream handling use the stand-ins of ``fake_tensorrt`` (they check
emotrack's use of the API, not TensorRT).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from engines.backends import trt_build as tb
from engines.backends import trt_ops
from engines.backends import BackendError, OnnxRuntimeBackend, select_backend
from engines.cards import MODELS_DIR
from engines.backends.tensorrt import available
from engines.backends.trt_build import EngineBuildError, Profile, ProfileError

import fake_tensorrt
from conftest import REPO, build_tiny_model, emotrack_cmd

TRT_OK, TRT_WHY = available()
requires_gpu = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT/GPU not usable here: {TRT_WHY}")
SHIPPED = sorted(MODELS_DIR.glob("*.onnx"))
MIX = REPO / "examples" / "heldout_mix.ogg"
HOST = ("NVIDIA GeForce RTX 4090", "8.9", "10.1.0")


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """Every test gets its own engine cache (never the user's)."""
    d = tmp_path / "engine-cache"
    monkeypatch.setenv("EMOTRACK_ENGINE_CACHE", str(d))
    return d


def one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("emotrack: "), err
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in err, err
    return err


def run_cli(*args, timeout=180):
    return subprocess.run(emotrack_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ----------------------------------------------------------------------------- cache key


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOTRACK_ENGINE_CACHE", str(tmp_path / "x"))
    assert tb.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("EMOTRACK_ENGINE_CACHE")
    assert tb.cache_dir() == Path.home() / ".cache" / "emotrack" / "engines"


def test_cache_key_is_stable_and_changes_with_every_field(tiny_models, tmp_path):
    onnx = tiny_models["speech"]
    base = dict(gpu_name=HOST[0], compute_capability=HOST[1], trt_version=HOST[2], precision="fp32",
                profile=Profile(1, 4, 16))
    key = tb.engine_cache_key(onnx, **base)
    assert key == tb.engine_cache_key(onnx, **base) and len(key) == 64 and int(key, 16) >= 0
    variants = {"gpu_name": "NVIDIA A10", "compute_capability": "8.6", "trt_version": "10.2.0",
                "precision": "fp16", "profile": Profile(1, 8, 16)}
    keys = {key}
    for field, value in variants.items():
        k = tb.engine_cache_key(onnx, **dict(base, **{field: value}))
        assert k not in keys, field
        keys.add(k)
    assert tb.engine_cache_key(onnx, **dict(base, profile=Profile(1, 4, 32))) not in keys
    # the content counts, not the path
    moved = tmp_path / "elsewhere" / "renamed.onnx"
    moved.parent.mkdir()
    shutil.copy(onnx, moved)
    assert tb.engine_cache_key(moved, **base) == key
    other = tiny_models["music"]
    assert tb.engine_cache_key(other, **base) not in keys
    data = bytearray(moved.read_bytes())
    data[-1] ^= 1  # one bit of the ONNX bytes
    moved.write_bytes(bytes(data))
    assert tb.engine_cache_key(moved, **base) != key


def test_engine_path_is_in_the_cache_dir_and_names_the_model(tiny_models, engine_cache):
    p = tb.engine_path(tiny_models["speech"], *HOST, "fp16", Profile(1, 4, 16))
    assert p.parent == engine_cache and p.name.startswith("speech-fp16-") and p.suffix == ".plan"


def test_bad_key_fields_are_refused(tiny_models):
    with pytest.raises(ValueError, match="precision"):
        tb.engine_cache_key(tiny_models["speech"], *HOST, "int8", Profile())
    with pytest.raises(TypeError):
        tb.engine_cache_key(tiny_models["speech"], *HOST, "fp32", (1, 4, 16))


# ----------------------------------------------------------------------------- sidecar


def test_saved_engine_loads_back_with_a_complete_sidecar(tiny_models):
    onnx, prof = tiny_models["speech"], Profile(1, 2, 8)
    plan = b"not really a plan \x00\x01" * 100
    path = tb.save_engine(plan, onnx, *HOST, "fp32", prof)
    assert path == tb.engine_path(onnx, *HOST, "fp32", prof) and path.read_bytes() == plan
    meta = json.loads(tb.sidecar_path(path).read_text())
    for k, v in {"gpu_name": HOST[0], "compute_capability": HOST[1], "trt_version": HOST[2],
                 "precision": "fp32", "profile": [1, 2, 8], "onnx_name": "speech.onnx"}.items():
        assert meta[k] == v, k
    assert meta["onnx_sha256"] == tb._onnx_sha256(onnx) and meta["key"] == tb.engine_cache_key(onnx, *HOST, "fp32", prof)
    assert tb.load_cached_engine(onnx, *HOST, "fp32", prof) == plan


@pytest.mark.parametrize("field, value", [
    ("gpu_name", "Tesla T4"), ("compute_capability", "7.5"), ("trt_version", "10.0.1"),
    ("precision", "fp16"), ("profile", [1, 4, 8]), ("onnx_sha256", "0" * 64), ("key", "f" * 64),
    ("plan_sha256", "0" * 64), ("key_version", 0),
])
def test_a_sidecar_that_does_not_match_gives_none(tiny_models, field, value):
    onnx, prof = tiny_models["speech"], Profile(1, 2, 8)
    path = tb.save_engine(b"plan bytes", onnx, *HOST, "fp32", prof)
    side = tb.sidecar_path(path)
    meta = json.loads(side.read_text())
    meta[field] = value
    side.write_text(json.dumps(meta))
    assert tb.load_cached_engine(onnx, *HOST, "fp32", prof) is None


@pytest.mark.parametrize("change", ["host", "onnx", "plan", "no_sidecar", "bad_json", "no_plan"])
def test_stale_or_foreign_engines_are_not_loaded(tiny_models, change):
    onnx, prof = tiny_models["speech"], Profile(1, 2, 8)
    path = tb.save_engine(b"plan bytes", onnx, *HOST, "fp32", prof)
    host = HOST
    if change == "host":
        host = ("NVIDIA A100-SXM4-40GB", "8.0", HOST[2])
    elif change == "onnx":
        onnx.write_bytes(onnx.read_bytes() + b"\x00")
    elif change == "plan":
        path.write_bytes(b"plan bytez")
    elif change == "no_sidecar":
        tb.sidecar_path(path).unlink()
    elif change == "bad_json":
        tb.sidecar_path(path).write_text("{not json")
    elif change == "no_plan":
        path.unlink()
    assert tb.load_cached_engine(onnx, *host, "fp32", prof) is None


def test_list_cached_engines(tiny_models, engine_cache):
    assert tb.list_cached_engines() == []
    tb.save_engine(b"a", tiny_models["speech"], *HOST, "fp32", Profile(1, 4, 16))
    tb.save_engine(b"bb", tiny_models["music"], *HOST, "fp16", Profile(1, 2, 8))
    rows = tb.list_cached_engines()
    assert [(r["onnx_name"], r["precision"], r["profile"], r["present"]) for r in rows] == \
        [("music.onnx", "fp16", [1, 2, 8], True), ("speech.onnx", "fp32", [1, 4, 16], True)]


def test_unwritable_cache_is_one_clear_error(tiny_models, tmp_path, monkeypatch):
    f = tmp_path / "a-file"
    f.write_text("x")
    monkeypatch.setenv("EMOTRACK_ENGINE_CACHE", str(f / "sub"))
    with pytest.raises(EngineBuildError, match="EMOTRACK_ENGINE_CACHE"):
        tb.save_engine(b"p", tiny_models["speech"], *HOST, "fp32", Profile())


# ----------------------------------------------------------------------------- profile


@pytest.mark.parametrize("mn, opt, mx", [(1, 1, 1), (1, 4, 16), (1, 16, 256), (1, 1, 16), (1, 8, 8)])
def test_valid_profiles(mn, opt, mx):
    p = Profile(mn, opt, mx)
    assert p.as_list() == [mn, opt, mx] and str(p) == f"{mn}/{opt}/{mx}"


@pytest.mark.parametrize("mn, opt, mx, match", [
    (2, 4, 16, "min batch must be 1"), (1, 0, 16, "1 <= opt <= max"), (1, 17, 16, "1 <= opt <= max"),
    (1, 64, 257, "above the limit of 256"), (1, 1, 17, "too wide"), (1, 4, 128, "--opt-batch >= 8"),
    (1, 4.0, 16, "integer"), (1, True, 16, "integer"),
])
def test_invalid_profiles(mn, opt, mx, match):
    with pytest.raises(ProfileError, match=match):
        Profile(mn, opt, mx)


@pytest.mark.parametrize("mx, opt", [(1, 1), (2, 2), (4, 4), (16, 4), (64, 4), (65, 5), (256, 16)])
def test_default_opt_batch_is_valid(mx, opt):
    assert tb.default_opt_batch(mx) == opt
    assert Profile.for_batch(mx) == Profile(1, opt, mx)


def test_for_batch_refuses_zero():
    with pytest.raises(ProfileError):
        Profile.for_batch(0)


def test_fast_fp16_by_capability():
    assert [tb.fast_fp16_by_capability(c) for c in ("6.1", "6.0", "7.5", "8.9", "5.2", "9.0")] == \
        [False, True, True, True, False, True]
    assert tb.resolve_precision(True, "6.1") == "fp32" and tb.resolve_precision(True, "8.0") == "fp16"
    assert tb.resolve_precision(False, "8.0") == "fp32"


# ----------------------------------------------------------------------------- this host


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable on this host")
def test_available_says_why_not_here():
    ok, why = available()
    assert ok is False and "\n" not in why
    assert ("tensorrt" in why or "pycuda" in why or "CUDA" in why), why
    if "not installed" in why:
        assert "emotrack[gpu]" in why and "pypi.nvidia.com" in why


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable on this host")
def test_build_engine_without_tensorrt_is_one_line(tiny_models):
    with pytest.raises(EngineBuildError) as exc:
        tb.build_engine(tiny_models["speech"])
    assert "\n" not in str(exc.value) and "tensorrt" in str(exc.value).lower()


# ----------------------------------------------------------------------------- selection


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable on this host")
def test_select_here_falls_back_or_refuses(tiny_models):
    be = select_backend("auto", tiny_models["speech"])
    assert be.name == "onnxruntime" and "TensorRT is not usable" in be.description and TRT_WHY in be.description
    with pytest.raises(BackendError) as exc:
        select_backend("tensorrt", tiny_models["speech"])
    assert "\n" not in str(exc.value) and str(exc.value).startswith("--backend tensorrt is not usable")


@pytest.mark.parametrize("error", [EngineBuildError("TensorRT cannot parse speech.onnx: node 3 (STFT): no importer"),
                                   RuntimeError("cuMemAlloc failed: out of memory\nmore")])
def test_auto_falls_back_when_no_engine_can_be_had(tiny_models, monkeypatch, error):
    import engines.backends as eb
    import engines.backends.tensorrt as etb

    monkeypatch.setattr(eb, "tensorrt_available", lambda: (True, "TensorRT 10.1.0 on Fake GPU"))

    def fail(*a, **k):
        raise error
    monkeypatch.setattr(etb, "TensorRTBackend", fail)
    be = select_backend("auto", tiny_models["speech"])
    first = str(error).splitlines()[0]
    assert be.name == "onnxruntime" and "TensorRT is not usable" in be.description and first in be.description
    assert "\n" not in be.description
    with pytest.raises(BackendError) as exc:
        select_backend("tensorrt", tiny_models["speech"])
    assert first in str(exc.value) and "\n" not in str(exc.value)


def test_auto_uses_tensorrt_when_an_engine_can_be_had(tiny_models, monkeypatch):
    import engines.backends as eb
    import engines.backends.tensorrt as etb

    class Fake(eb.Backend):
        name = "tensorrt"

        def __init__(self, path):
            self.path = path

    monkeypatch.setattr(eb, "tensorrt_available", lambda: (True, "ok"))
    monkeypatch.setattr(etb, "TensorRTBackend", Fake)
    assert select_backend("auto", tiny_models["speech"]).name == "tensorrt"
    assert select_backend("tensorrt", tiny_models["speech"]).name == "tensorrt"
    assert select_backend("onnxruntime", tiny_models["speech"]).name == "onnxruntime"


# ----------------------------------------------------------------------------- CLI


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable on this host")
def test_engines_build_here_is_one_line_nonzero():
    proc = run_cli("engines", "build")
    assert proc.returncode == 5
    one_line_error(proc, "engines build needs TensorRT 10 and pycuda", "emotrack[gpu]")


@pytest.mark.skipif(TRT_OK, reason="TensorRT is usable on this host")
def test_replay_with_tensorrt_here_is_one_line_nonzero(tiny_models, tmp_path):
    proc = run_cli("replay", str(MIX), "--no-pub", "--backend", "tensorrt", "--out", str(tmp_path / "o.jsonl"),
                   "--speech-model", str(tiny_models["speech"]), "--music-model", str(tiny_models["music"]))
    assert proc.returncode == 5
    one_line_error(proc, "--backend tensorrt is not usable on this host")


def test_engines_build_bad_profile_is_a_parameter_error():
    proc = run_cli("engines", "build", "--max-batch", "64", "--opt-batch", "2")
    assert proc.returncode == 2
    one_line_error(proc, "too wide")
    proc = run_cli("engines", "build", "--max-batch", "0")
    assert proc.returncode == 2
    one_line_error(proc, "--max-batch")


def test_engines_list_empty_and_with_engines(tiny_models, engine_cache):
    proc = run_cli("engines", "list")
    assert proc.returncode == 0 and "no cached engines" in proc.stderr and not proc.stdout
    tb.save_engine(b"x" * 2000, tiny_models["speech"], *HOST, "fp16", Profile(1, 4, 16))
    proc = run_cli("engines", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "PRECISION", "BATCH"] and len(lines) == 2
    for token in ("speech.onnx", "fp16", "1/4/16", HOST[0], HOST[1], HOST[2], str(engine_cache)):
        assert token in lines[1], token


def test_engines_needs_a_subcommand():
    proc = run_cli("engines")
    assert proc.returncode == 2
    one_line_error(proc)


# ----------------------------------------------------------------------------- ONNX ops


def test_op_table_is_the_tensorrt_10_matrix():
    assert "onnx-tensorrt" in trt_ops.SOURCE and (trt_ops.OPSET_MIN, trt_ops.OPSET_MAX) == (9, 20)
    assert {"Conv", "MatMul", "Gemm", "Relu", "Softmax", "Sigmoid", "Tanh", "ReduceMean", "Reshape",
            "BatchNormalization", "MaxPool", "GlobalAveragePool", "LSTM"} <= trt_ops.SUPPORTED_OPS
    assert {"STFT", "DFT", "MelWeightMatrix", "SequenceAt", "Unique"} <= trt_ops.UNSUPPORTED_OPS
    assert not trt_ops.SUPPORTED_OPS & trt_ops.UNSUPPORTED_OPS
    assert set(trt_ops.RESTRICTIONS) <= trt_ops.SUPPORTED_OPS


def test_tiny_test_graph_uses_only_supported_ops(tiny_models):
    for p in tiny_models.values():
        assert trt_ops.check_model(p) == []


@pytest.mark.skipif(not SHIPPED, reason=f"no shipped model under {MODELS_DIR} yet")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_models_use_only_tensorrt_ops(path):
    import json

    card = json.loads(path.with_suffix(".json").read_text())
    problems = trt_ops.check_model(path)
    if "onnx_ml_opset" in card:  # a scikit-learn export (skl2onnx): ONNX Runtime only, auto falls back to it
        assert problems and all(p.startswith("ai.onnx.ml.") for p in problems), (path.name, problems)
    else:
        assert problems == [], path.name


def test_op_check_finds_unsupported_ops_custom_domains_and_opsets(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    g = helper.make_graph([helper.make_node("Unique", ["x"], ["u"]),
                           helper.make_node("Relu", ["x"], ["y"]),
                           helper.make_node("Frobnicate", ["x"], ["z"], domain="com.example")], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.example", 1)])
    p = tmp_path / "bad.onnx"
    onnx.save(m, p)
    problems = trt_ops.check_model(p)
    assert any(s.startswith("Unique:") for s in problems)
    assert any("com.example.Frobnicate" in s for s in problems)
    assert any("opset 21" in s for s in problems)
    assert not any(s.startswith("Relu") for s in problems)


# ----------------------------------------------------------------------------- fake TensorRT (CPU)


def _features(n, frames=298, seed=0):
    return np.random.default_rng(seed).standard_normal((n, frames, 64, 3)).astype(np.float32)


def test_build_engine_calls_tensorrt_10_as_documented(tiny_models, monkeypatch):
    c = fake_tensorrt.install(monkeypatch)
    plan, info = tb.build_engine(tiny_models["speech"], max_batch=16, opt_batch=4, workspace_mb=256)
    b, = c.built
    assert b["name"] == "features" and b["min"] == (1, 298, 64, 3) and b["opt"] == (4, 298, 64, 3) \
        and b["max"] == (16, 298, 64, 3)
    assert b["pools"] == {"WORKSPACE": 256 << 20}
    assert "FP16" not in b["flags"] and "TF32" not in b["flags"]  # FP32 means FP32
    assert info["precision"] == "fp32" and info["input_shape"] == [298, 64, 3]
    tb.build_engine(tiny_models["music"], fp16=True, max_batch=8)
    assert "FP16" in c.built[-1]["flags"] and c.built[-1]["max"] == (8, 998, 64, 3)


def test_fp16_without_fast_fp16_builds_fp32_and_says_so(tiny_models, monkeypatch):
    c = fake_tensorrt.install(monkeypatch, fast_fp16=False)
    said = []
    _, info = tb.build_engine(tiny_models["speech"], fp16=True, echo=said.append)
    assert info["precision"] == "fp32" and "FP16" not in c.built[-1]["flags"]
    assert any("no fast FP16" in s for s in said)


def test_every_parser_error_is_in_the_exception(tiny_models, monkeypatch):
    fake_tensorrt.install(monkeypatch, parse_errors=[
        (3, "STFT", "spec", "No importer registered for op: STFT"),
        (7, "Frobnicate", "", "Plugin not found\nare the plugin libraries loaded?"),
        (-1, "", "", "Unsupported ONNX data type: UINT64")])
    with pytest.raises(EngineBuildError) as exc:
        tb.build_engine(tiny_models["speech"])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("TensorRT cannot parse speech.onnx: ")
    parts = msg.split(": ", 1)[1].split("; ")
    assert parts == ["node 3 (STFT 'spec'): No importer registered for op: STFT",
                     "node 7 (Frobnicate): Plugin not found are the plugin libraries loaded?",
                     "Unsupported ONNX data type: UINT64"]


def test_card_and_graph_dims_must_agree(tiny_models, monkeypatch):
    fake_tensorrt.install(monkeypatch)
    card_path = tiny_models["speech"].with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["inputs"]["features"]["shape"] = [None, 300, 64, 3]
    card_path.write_text(json.dumps(card))
    with pytest.raises(EngineBuildError, match=r"\[298, 64, 3\] in the graph but \[300, 64, 3\] in its card"):
        tb.build_engine(tiny_models["speech"])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_model_gets_its_engine_input_dims_from_its_card(path):
    """Emotion models and the separator alike (their cards differ): the engine profile's non-batch
    dims are the card's shape of the graph's one input, whatever that input is called."""
    import onnx
    from engines.cards import specs_by_name

    graph_input = onnx.load(str(path)).graph.input[0]
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in graph_input.type.tensor_type.shape.dim)
    card_path = path.with_suffix(".json")
    spec = specs_by_name(json.loads(card_path.read_text())["inputs"], card_path, "inputs")
    want = tuple(int(d) for d in spec[graph_input.name]["shape"][1:])
    assert tb.model_input_dims(path, graph_input.name, dims[1:]) == want


def test_get_engine_builds_once_then_uses_the_cache(tiny_models, monkeypatch):
    c = fake_tensorrt.install(monkeypatch)
    said = []
    plan, path, built = tb.get_engine(tiny_models["speech"], max_batch=8, echo=said.append)
    assert built and path.is_file() and len(c.built) == 1
    meta = tb.read_sidecar(path)
    assert (meta["gpu_name"], meta["compute_capability"], meta["trt_version"]) == ("Fake GPU", "8.9", "10.1.0")
    plan2, path2, built2 = tb.get_engine(tiny_models["speech"], max_batch=8, echo=said.append)
    assert (plan2, path2, built2) == (plan, path, False) and len(c.built) == 1
    # with no explicit options, any valid cached engine of the model will do
    assert tb.get_engine(tiny_models["speech"], echo=said.append)[1] == path and len(c.built) == 1
    # another profile or precision is another engine
    tb.get_engine(tiny_models["speech"], max_batch=8, fp16=True, echo=said.append)
    assert len(c.built) == 2
    tb.get_engine(tiny_models["speech"], max_batch=8, rebuild=True, echo=said.append)
    assert len(c.built) == 3


def test_backend_runs_batches_through_pinned_buffers_allocated_once(tiny_models, monkeypatch):
    c = fake_tensorrt.install(monkeypatch)
    onnx = tiny_models["speech"]
    ref = OnnxRuntimeBackend(onnx, providers=["CPUExecutionProvider"])
    from engines.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(onnx, max_batch=4)
    assert be.name == "tensorrt" and be.max_batch == 4 and "Fake GPU" in be.description
    assert c.pagelocked == 4 and c.mem_alloc == 4  # one input, three outputs, once
    for n, chunks in ((1, 1), (4, 1), (3, 1), (11, 3), (9, 3)):
        before = (c.sync, c.execute, c.htod, c.dtoh)
        x = _features(n, seed=n)
        out = be.run({"features": x})
        want = ref.run({"features": x})
        assert set(out) == {"quadrant", "va", "activity"}
        for k in want:
            assert out[k].shape == want[k].shape and out[k].dtype == np.float32
            np.testing.assert_allclose(out[k], want[k], rtol=1e-6, atol=1e-7)
        assert (c.sync - before[0], c.execute - before[1], c.htod - before[2], c.dtoh - before[3]) == \
            (chunks, chunks, chunks, 3 * chunks)  # one stream sync per engine run
    out = be.run({"features": _features(0)})
    assert out["quadrant"].shape == (0, 4) and out["activity"].shape == (0, 1)
    assert c.pagelocked == 4 and c.mem_alloc == 4  # nothing allocated per call
    assert c.push == c.pop  # every context push popped
    with pytest.raises(BackendError, match="does not match"):
        be.run({"features": _features(2, frames=300)})
    be.close()
    assert c.freed == 4 and c.host_freed == 4 and not c.allocs and c.push == c.pop
    be.close()  # idempotent
    assert c.freed == 4
    with pytest.raises(BackendError, match="after close"):
        be.run({"features": _features(1)})


def test_backend_outputs_are_copies_not_views_of_reused_buffers(tiny_models, monkeypatch):
    fake_tensorrt.install(monkeypatch)
    from engines.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(tiny_models["speech"], max_batch=2) as be:
        a = be.run({"features": _features(2, seed=1)})
        keep = {k: v.copy() for k, v in a.items()}
        be.run({"features": _features(2, seed=2)})
        for k in a:
            np.testing.assert_array_equal(a[k], keep[k])


def test_backend_takes_the_engine_built_by_engines_build(tiny_models, monkeypatch):
    c = fake_tensorrt.install(monkeypatch)
    tb.get_engine(tiny_models["speech"], fp16=True, max_batch=32, opt_batch=8, echo=lambda s: None)
    from engines.backends.tensorrt import TensorRTBackend

    be = TensorRTBackend(tiny_models["speech"])
    assert be.max_batch == 32 and be.precision == "fp16" and len(c.built) == 1 and "cached" in be.description
    be.close()


def test_a_plan_that_does_not_deserialize_is_a_clear_error(tiny_models, monkeypatch):
    c = fake_tensorrt.install(monkeypatch)
    tb.save_engine(b"garbage", tiny_models["speech"], "Fake GPU", "8.9", "10.1.0", "fp32", Profile(1, 4, 16))
    from engines.backends.tensorrt import TensorRTBackend

    with pytest.raises(EngineBuildError, match="cannot deserialize"):
        TensorRTBackend(tiny_models["speech"], max_batch=16)
    assert c.push == c.pop and not c.allocs


# ----------------------------------------------------------------------------- GPU


def _real_windows(model_path: Path, limit: int = 24) -> dict:
    """The model's inputs (by name) for windows of the shipped example mix, at its window and hop."""
    from engines.cards import load_card
    from streamer.inputs import stack_inputs, window_inputs
    from streamer.predict import clip_windows, read_clip
    from streamer.sources import SAMPLE_RATE

    if not MIX.is_file():
        pytest.skip(f"example mix {MIX} not found")
    card = load_card(model_path)
    x = read_clip(str(MIX))
    wins = clip_windows(x, int(round(card["window_s"] * SAMPLE_RATE)), int(round(card["hop_s"] * SAMPLE_RATE)))
    idx = np.linspace(0, len(wins) - 1, min(limit, len(wins))).round().astype(int)
    return stack_inputs([window_inputs(w, list(card["inputs"])) for w in wins[idx]])


def _rows(inputs: dict, n: int) -> dict:
    return {k: v[:n] for k, v in inputs.items()}


def _gpu_models(tmp_path):
    """The tiny model and every shipped emotion model (the separator has its own chunked input)."""
    models = {"tiny-speech": build_tiny_model(tmp_path / "tiny", "speech", 3.0, 1.0, seed=1)}
    models.update({p.stem: p for p in SHIPPED if p.stem != "separator"})
    return models


@pytest.mark.gpu
@requires_gpu
@pytest.mark.skipif(not SHIPPED, reason=f"no shipped model under {MODELS_DIR} yet")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_gpu_build_shipped_models(path):
    host = tb.host_info()
    plan, epath, built = tb.get_engine(path, fp16=False, max_batch=16, rebuild=True)
    assert built and len(plan) > 0 and epath.is_file()
    meta = tb.read_sidecar(epath)
    for k in ("gpu_name", "compute_capability", "trt_version"):
        assert meta[k] == host[k]
    assert meta["profile"] == [1, 4, 16] and meta["precision"] == "fp32"
    assert tb.load_cached_engine(path, host["gpu_name"], host["compute_capability"], host["trt_version"],
                                 "fp32", Profile(1, 4, 16)) == plan
    assert tb.get_engine(path, fp16=False, max_batch=16)[2] is False  # cached now
    from engines.backends.trt_ops import check_model
    assert check_model(path) == []


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_gpu_parity_with_onnxruntime(tmp_path, precision, atol):
    from engines.backends.tensorrt import TensorRTBackend

    host = tb.host_info()
    if precision == "fp16" and tb.resolve_precision(True, host["compute_capability"]) != "fp16":
        pytest.skip(f"{host['gpu_name']} has no fast FP16")
    for name, path in _gpu_models(tmp_path).items():
        x = _real_windows(path)
        ref = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"]).run(x)
        be = TensorRTBackend(path, max_batch=8, fp16=precision == "fp16")
        n_all = len(next(iter(x.values())))
        try:
            assert be.precision == precision
            for n in (1, 3, 8, n_all):  # n_all > 8: split into engine-sized batches
                got = be.run(_rows(x, n))
                for k in ("quadrant", "va", "activity"):
                    assert got[k].shape == ref[k][:n].shape, (name, k)
                    np.testing.assert_allclose(got[k], ref[k][:n], atol=atol, rtol=0, err_msg=f"{name} {k} n={n}")
        finally:
            be.close()
            be.close()
        with pytest.raises(BackendError):
            be.run(_rows(x, 1))


@pytest.mark.gpu
@requires_gpu
def test_gpu_auto_selects_tensorrt(tmp_path):
    path = build_tiny_model(tmp_path / "tiny", "speech", 3.0, 1.0, seed=1)
    be = select_backend("auto", path)
    try:
        assert be.name == "tensorrt", be.description
        out = be.run(_real_windows(path, limit=4))
        assert out["quadrant"].shape == (4, 4)
    finally:
        be.close()


@pytest.mark.gpu
@requires_gpu
def test_gpu_throughput(tmp_path, capsys):
    from engines.backends.tensorrt import TensorRTBackend

    for name, path in _gpu_models(tmp_path).items():
        x = _real_windows(path, limit=16)
        x = {k: np.concatenate([v] * (16 // len(v) + 1))[:16] for k, v in x.items()}
        cpu = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
        for label, be in (("tensorrt", TensorRTBackend(path, max_batch=16)), ("onnxruntime-cpu", cpu)):
            be.run(x)  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 2.0:
                out = be.run(x)
                n += 16
            dt = time.perf_counter() - t0
            assert np.isfinite(out["va"]).all()
            with capsys.disabled():
                print(f"\n{name} {label}: {n / dt:.0f} windows/s at batch 16 "
                      f"({1000 * dt / (n / 16):.2f} ms per batch)")
            be.close()
