"""A code change reruns exactly the stages it affects: each stage's deps in dvc.yaml hold every project module its
command imports, directly or through other modules, and no other; derived here from the code itself."""
from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, clone_project
from tests.factories.movielens import CHAIN

PACKAGES = ("stages", "pipelines")


def module_file(name: str, root: Path = REPO) -> Path | None:
    path = root.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


@cache
def imported_names(path: Path) -> frozenset[str]:
    """Project modules (and names inside them) a file imports anywhere, function bodies included: those run too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n.split(".")[0] in PACKAGES)


def import_closure(module: str, root: Path = REPO) -> set[str]:
    """Repo-relative paths of every project file that running `python -m module` executes: the module, what it
    imports transitively, and the packages' non-empty __init__.py files on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run their __init__
        path = module_file(name, root)
        if path is None or path in seen:
            continue  # a name defined inside a module, not a module
        seen.add(path)
        todo.extend(imported_names(path))
    return {str(p.relative_to(root)) for p in seen if p.name != "__init__.py" or p.read_text().strip()}


def stage_definitions(root: Path = REPO) -> dict[str, dict]:
    """dvc.yaml's stages as written (a foreach stage once: its deps are the same for every item)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def command_module(cmd: str) -> str:
    match = re.match(r"python -m ([\w.]+)", cmd)
    assert match, f"stage command `{cmd}` is not `python -m <module> ...`"
    return match.group(1)


def test_every_stage_depends_on_exactly_the_modules_its_command_imports():
    problems = []
    for name, stage in stage_definitions().items():
        needed = import_closure(command_module(stage["cmd"]))
        listed = {dep for dep in stage.get("deps", []) if dep.endswith(".py")}
        problems += [f"{name}: missing dep {path} (imported by its command)" for path in sorted(needed - listed)]
        problems += [f"{name}: dep {path} is not imported by its command" for path in sorted(listed - needed)]
    assert not problems, "dvc.yaml deps out of step with the code:\n  " + "\n  ".join(problems)


def test_the_closure_follows_imports_inside_functions_and_through_packages(tmp_path):
    (tmp_path / "stages" / "w").mkdir(parents=True)
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "w" / "__init__.py").write_text('"""a package that documents itself"""\n')
    (tmp_path / "stages" / "w" / "main.py").write_text("def f():\n    from stages.w import helper\n")
    (tmp_path / "stages" / "w" / "helper.py").write_text("from stages.w.deep import VALUE\nimport numpy\n")
    (tmp_path / "stages" / "w" / "deep.py").write_text("VALUE = 1\n")
    (tmp_path / "stages" / "w" / "unused.py").write_text("")
    assert import_closure("stages.w.main", tmp_path) == {
        "stages/w/__init__.py", "stages/w/main.py", "stages/w/helper.py", "stages/w/deep.py"}


def dvc_yaml_paths(root: Path = REPO) -> set[str]:
    """Every data path dvc.yaml names (stage deps, outs, metrics and plots, and the top-level plots), with its
    `${...}` interpolations written as the paths modules write them: `{name}`."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    entries = [entry for stage in stage_definitions(root).values()
               for field in ("deps", "outs", "metrics", "plots") for entry in stage.get(field, [])]
    entries += dvc.get("plots", [])
    names = (next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries)
    return {re.sub(r"\$\{[^}]+\}", "{name}", name) for name in names if name.startswith("data/")}


def paths_module_values(root: Path = REPO) -> set[str]:
    """The path constants of every workload's paths module."""
    values = set()
    for module in sorted(root.glob("stages/*/paths.py")):
        namespace: dict = {}
        exec(compile(module.read_text(), str(module), "exec"), namespace)
        values |= {value for name, value in namespace.items() if name.isupper() and isinstance(value, str)
                   and value.startswith("data/")}
    return values


def within(path: str, templates: set[str]) -> bool:
    """`path` is one of the templates, or inside one, with `{name}`/`{dim}` standing for any file-name part."""
    for template in templates:
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(f"{pattern}(/.*)?", path):
            return True
    return False


def test_each_data_path_is_written_once_in_a_paths_module_and_dvc_yaml_uses_the_same():
    declared, coded = dvc_yaml_paths(), paths_module_values()
    assert declared and coded
    # a dvc.yaml path is a constant, or a file inside a folder output that a constant names
    assert sorted(p for p in declared if not within(p, coded)) == []
    # a constant is declared in dvc.yaml (for some {name}), or lies inside a declared folder
    assert sorted(p for p in coded if not (within(p, declared) or any(within(d, {p}) for d in declared))) == []


def changed_stages(project) -> set[str]:
    """The stages of the MovieLens chain that `dvc status` reports changed."""
    status = json.loads(project.dvc("status", "--json", *CHAIN).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def importers(module: str, stages: list[str], root: Path) -> set[str]:
    """The stages (foreach items expanded) whose command's import closure holds `module`."""
    definitions = stage_definitions(root)
    return {stage for stage in stages
            if module in import_closure(command_module(definitions[stage.split("@")[0]]["cmd"]), root)}


@pytest.mark.slow
def test_editing_shared_code_or_a_params_default_marks_exactly_the_stages_that_import_it(movielens_chain, tmp_path):
    project = clone_project(movielens_chain, tmp_path / "project")
    assert changed_stages(project) == set()
    edits = {"stages/common/training.py": ("BACKUP_ROOT = Path(\".cache/backup\")",
                                          "BACKUP_ROOT = Path(\".cache/backups\")"),
             "stages/movielens/params.py": ("dropout_hidden: float = Field(default=0.75",
                                            "dropout_hidden: float = Field(default=0.7")}
    for module, (old, new) in edits.items():
        path = project.root / module
        original = path.read_text()
        assert old in original, f"{module} no longer holds {old!r}: update this test's edit"
        path.write_text(original.replace(old, new))
        expected = importers(module, CHAIN, project.root)
        assert changed_stages(project) == expected, module
        path.write_text(original)
        assert changed_stages(project) == set()
    # the code change touches training only, the params schema every stage that validates params
    assert importers("stages/common/training.py", CHAIN, project.root) == {
        "movielens_train@dot", "movielens_train@bias", "movielens_train@nn"}
    assert "movielens_download" in importers("stages/movielens/params.py", CHAIN, project.root)
