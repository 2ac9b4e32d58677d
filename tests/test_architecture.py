"""The layout is the architecture: no import circles, and arrows only downward.

The imports of every module in engines/, streamer/, clients/ and training/ are
read with ``ast`` (nothing is imported), lazy imports inside functions
included: a lazy import is still an arrow.  Allowed arrows:

    training -> streamer -> engines        clients -> streamer.schema (the messages),
                                                      streamer.security (CURVE keys, to subscribe),
                                                      streamer.errors / engines.errors (one tree),
                                                      engines.argtypes (option value types)

and nothing else: engines imports no other room, streamer imports neither
training nor clients, clients import no model, source or pipeline code.  The
one exception is the command registry in :mod:`streamer.cli` (the composition
root of the ``emotrack`` program): it names command modules as strings and
imports the one a user runs, so the test checks those names instead.
"""

from __future__ import annotations

import ast
import importlib.util
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("engines", "streamer", "clients", "training")
#: room -> rooms it may import (besides itself)
ALLOWED = {"engines": set(), "streamer": {"engines"}, "training": {"streamer", "engines"},
           "clients": {"streamer", "engines"}}
#: what clients may import from the rooms below: the message schema and what a subscriber needs
#: (streamer.segments: passages computed from message bodies alone, pure Python like the schema)
CLIENT_MODULES = {"streamer.schema", "streamer.security", "streamer.errors", "engines.errors", "engines.argtypes",
                  "streamer.segments"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    mods = {}
    for room in ROOMS:
        for p in sorted((REPO / room).rglob("*.py")):
            mods[module_name(p)] = p
    return mods


MODULES = all_modules()


def resolve(name: str) -> str | None:
    """The project module ``name`` is, or lies in (``a.b.c`` -> ``a.b`` where c is a name in a.b)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(mod: str) -> set[str]:
    path = MODULES[mod]
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base[:len(base) - node.level + 1]
                stem = ".".join(pkg + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            r = resolve(t)
            if r and r != mod:
                out.add(r)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def package_of(mod: str) -> str:
    return mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]


def test_no_module_cycles():
    found = cycles(GRAPH)
    assert not found, "import circles between modules: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_package_cycles():
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for m, deps in GRAPH.items():
        for d in deps:
            a, b = package_of(m), package_of(d)
            # a package's __init__ may gather its own submodules; a submodule leaning on its parent
            # package's __init__ is the same room
            if a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
                pkg_graph[a].add(b)
    found = cycles(pkg_graph)
    assert not found, "import circles between packages: " + "; ".join(" <-> ".join(c) for c in found)


def test_arrows_point_down():
    wrong = []
    for m, deps in sorted(GRAPH.items()):
        room = m.split(".")[0]
        for d in sorted(deps):
            target = d.split(".")[0]
            if target == room:
                continue
            if target not in ALLOWED[room]:
                wrong.append(f"{m} -> {d}")
            elif room == "clients" and d not in CLIENT_MODULES:
                wrong.append(f"{m} -> {d} (clients may import only {', '.join(sorted(CLIENT_MODULES))})")
    assert not wrong, "imports against the layers: " + "; ".join(wrong)


def test_the_checker_finds_a_cycle_and_resolves_relative_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]
    assert "engines.errors" in GRAPH["streamer.errors"]
    assert "engines.errors" in GRAPH["engines.backends"]  # from ..errors import, in a package __init__


def test_command_registry_names_real_modules():
    from streamer.cli import COMMANDS

    assert {"replay", "stream", "predict", "train", "record", "engines", "bench", "batch", "proxy"} <= set(COMMANDS)
    for name, mod in COMMANDS.items():
        assert mod in MODULES, f"command {name!r}: no module {mod}"
        assert importlib.util.find_spec(mod) is not None
        text = MODULES[mod].read_text(encoding="utf-8")
        assert "def add_parser(" in text or "add_parser = " in text, f"{mod} has no add_parser"
        assert "def run(" in text, f"{mod} has no run(args)"


def test_training_marked_tests_skip_with_a_reason_where_tensorflow_is_missing():
    """conftest turns the ``training`` mark into a skip (not a failure) without TensorFlow: run one such
    test in a child pytest with ``tensorflow`` hidden."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import pytest; sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', "
            "'tests/streamer/test_separation.py', '-k', 'training_quick_run']))")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert cp.returncode == 0, cp.stdout[-2000:]
    assert "1 skipped" in cp.stdout and "tensorflow not installed" in cp.stdout, cp.stdout[-2000:]
