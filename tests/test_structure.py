"""The code's layering, read from the source with `ast` (nothing is imported, so this takes a second): no import
circle in stages/ or pipelines/, no workload importing another workload's modules, no test importing benchmarks/
but the tests of a benchmark module, and (not yet) no workload named in pipelines/.

Imports anywhere in a file count, function bodies included: they run too (as in pipelines/stage_deps.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = ("movielens", "imdb", "glove", "dogscats", "text")


# The one exception to "tests import nothing from benchmarks/": a test whose subject is a benchmark module imports
# what it tests. Helpers that tests and benchmarks both use live in harness/.
BENCHMARK_SUBJECTS = {
    "tests.test_results_docs": ({"benchmarks.common", "benchmarks.render"}, "the results records and their docs"),
    "tests.test_suite_census": ({"benchmarks.test_suite"}, "the test-suite benchmark's process census"),
    "tests.test_cpu": ({"benchmarks.common", "benchmarks.render"}, "the machine a record names, as rendered"),
    "tests.test_gpu_check": ({"benchmarks.common", "benchmarks.gpu_check"}, "`make gpu-check` and its records"),
    "tests.test_imdb": (
        {"benchmarks.imdb"},
        "the IMDB benchmark's model options, its ensembles, and its library tokenizer agreeing with the stage's",
    ),
    "tests.test_movielens": ({"benchmarks.movielens_scale"}, "the MovieLens scale benchmark's archives"),
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], package: str) -> set[str]:
    """The modules of `modules` the file imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a module a.b.c, or a name inside a module
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(root: Path, folders: tuple[str, ...]) -> nx.DiGraph:
    """Module -> the project modules it imports, for every .py file under `folders` of `root`."""
    files = {module_name(p, root): p for folder in folders for p in sorted((root / folder).rglob("*.py"))}
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph.add_edges_from((name, imported) for imported in imported_modules(path, set(files), package))
    graph.remove_edges_from(nx.selfloop_edges(graph))
    return graph


def circles(graph: nx.DiGraph) -> list[list[str]]:
    return sorted(sorted(cycle) for cycle in nx.simple_cycles(graph))


def workload(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "stages" and len(parts) > 1 and parts[1] in WORKLOADS else None


@pytest.fixture(scope="module")
def code() -> nx.DiGraph:
    return import_graph(REPO, ("stages", "pipelines", "harness", "benchmarks", "tests"))


def test_the_import_graph_finds_a_circle_through_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "stages" / "common"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from stages.common.b import g\n")
    (package / "b.py").write_text("from . import c\n")
    (package / "c.py").write_text("import stages.common.a\n")
    (package / "d.py").write_text("from stages.common import a, b\n")  # imports two, in no circle itself
    graph = import_graph(tmp_path, ("stages",))
    assert set(graph.successors("stages.common.d")) == {"stages.common.a", "stages.common.b"}
    assert circles(graph) == [["stages.common.a", "stages.common.b", "stages.common.c"]]


def test_no_import_circle_in_stages_or_pipelines(code):
    ours = code.subgraph(n for n in code if n.split(".")[0] in ("stages", "pipelines"))
    assert circles(ours) == []


def test_no_workload_imports_another_workloads_modules_and_common_code_imports_none(code):
    crossing = {
        (a, b)
        for a, b in code.edges
        if workload(b) and a.startswith("stages.") and workload(a) != workload(b)  # stages.common too
    }
    assert crossing == set(), "a workload reads another's outputs through the paths dvc.yaml passes, not its code"


def test_tests_import_nothing_from_benchmarks_but_the_benchmark_modules_they_test(code):
    used = {
        (a, b) for a, b in code.edges if a.split(".")[0] in ("tests", "harness") and b.split(".")[0] == "benchmarks"
    }
    allowed = {(test, module) for test, (modules, _) in BENCHMARK_SUBJECTS.items() for module in modules}
    assert used - allowed == set(), "move what tests and benchmarks share to harness/"
    assert allowed - used == set(), "no longer imported: delete these BENCHMARK_SUBJECTS entries"


def test_harness_imports_nothing_from_tests_or_benchmarks(code):
    assert {
        (a, b) for a, b in code.edges if a.startswith("harness") and b.split(".")[0] in ("tests", "benchmarks")
    } == set()


def test_pipelines_name_no_workload(code):
    """pipelines/ loops over the workloads' declarations (stages/<workload>/workload.py): no import of a workload's
    modules, and no string that names one or one of its stages (`imdb`, `dogscats_features`), docstrings included."""
    imports = sorted((a, b) for a, b in code.edges if a.startswith("pipelines") and workload(b))
    # "text" is also a word: only its stages' prefix and the bare name count
    named = re.compile(rf"\b({'|'.join(w for w in WORKLOADS if w != 'text')})(\b|_)|\btext_\w|^text$")
    names = sorted(
        (str(path.relative_to(REPO)), node.lineno)
        for path in sorted((REPO / "pipelines").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and named.search(node.value)
    )
    assert (imports, names) == ([], [])
