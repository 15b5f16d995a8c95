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


# Library code never prints: it returns text or tells a ``warn``/``log`` callback, and the commands
# (benchmark/commands/) write to the console. The only other prints, each a process's own console:
PRINTS_ALLOWED = {
    ("benchmark/cli.py", "main"),  # the CLI's one error line for a bad input or an interrupt
    ("benchmark/run/__main__.py", "main"),  # a job process's usage and error line (no command above it)
    ("benchmark/run/state.py", "JobLog.__call__"),  # the job log's echo: the job's console is its output
    ("benchmark/engine/distributed.py", "RankWatch.abort"),  # a rank's last line before it exits
    ("benchmark/report/freeze.py", "main"),  # `python -m benchmark.report.freeze`: a maintainer's CLI
    # a SLURM task whose results folder moved: its one line goes to the SLURM log, as it must not
    # open the job log (that would rebuild the old folder)
    ("benchmark/launch/slurm.py", "SlurmJob._results_gone"),
}


def prints(package: Path = PACKAGE):
    """("file", "Class.function") of every ``print(`` call in the package outside benchmark/commands/."""
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        if where.startswith("benchmark/commands/"):
            continue
        found += [(where, name) for name in _prints_in(ast.parse(path.read_text(encoding="utf-8")), "")]
    return found


def _prints_in(node: ast.AST, scope: str):
    """The scope (dotted class and function names) of each print call under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _prints_in(child, f"{scope}.{child.name}".lstrip("."))
            continue
        if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
            yield scope or "<module>"
        yield from _prints_in(child, scope)


def test_library_code_never_prints():
    found = prints()
    assert ("benchmark/cli.py", "main") in found  # the walk found the package's prints
    assert [p for p in found if p not in PRINTS_ALLOWED] == []


def test_a_print_in_a_library_module_fails_the_check(tmp_path):
    import shutil

    copy = tmp_path / "benchmark"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / "report" / "tables.py"
    module.write_text(module.read_text() + "\n\ndef said():\n    print('hello')\n")
    assert [p for p in prints(copy) if p not in PRINTS_ALLOWED] == [("benchmark/report/tables.py", "said")]


if __name__ == "__main__":  # python tests/test_code_shape.py: the ten longest
    for n, where in function_lengths()[:10]:
        print(f"{n:4d}  {where}")
