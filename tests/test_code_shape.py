"""The package's own shape: short functions (the linters check imports and style)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "benchmark"
MAX_FUNCTION_LINES = 60


def function_lengths():
    """(lines, "file:line name") of every function and method in the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
                out.append((node.end_lineno - start + 1, where))
    return sorted(out, reverse=True)


def test_no_function_is_longer_than_60_lines():
    lengths = function_lengths()
    assert len(lengths) > 100  # the walk found the package
    too_long = [f"{where} ({n} lines)" for n, where in lengths if n > MAX_FUNCTION_LINES]
    assert not too_long, too_long


if __name__ == "__main__":  # python tests/test_code_shape.py: the ten longest
    for n, where in function_lengths()[:10]:
        print(f"{n:4d}  {where}")
