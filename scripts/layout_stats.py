"""The 10 largest .py files and every function longer than 80 lines (counted with ast).

    python scripts/layout_stats.py [ROOT]
"""
import ast
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
skip = {".venv", ".git", "build", "node_modules"}
files = [p for p in root.rglob("*.py") if not (set(p.relative_to(root).parts) & skip)]
sizes = sorted(((len(p.read_text().splitlines()), p.relative_to(root)) for p in files), reverse=True)
print("10 largest .py files:")
for n, p in sizes[:10]:
    print(f"  {n:5d}  {p}")
long = []
for p in files:
    tree = ast.parse(p.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > 80:
                long.append((n, f"{p.relative_to(root)}:{node.lineno} {node.name}"))
long.sort(reverse=True)
print(f"functions over 80 lines: {len(long)}")
for n, where in long:
    print(f"  {n:5d}  {where}")
