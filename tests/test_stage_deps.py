"""A code change reruns exactly the stages it affects: each stage's deps in dvc.yaml hold every project module its
command imports, directly or through other modules, and no other; derived here from the code itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipelines.stage_deps import command_module, differences, import_closure, stage_definitions
from tests.conftest import REPO, clone_project
from tests.factories.movielens import CHAIN


def test_every_stage_depends_on_exactly_the_modules_its_command_imports():
    problems = differences()
    assert not problems, (
        "dvc.yaml deps out of step with the code (`python -m pipelines.stage_deps --write` fixes "
        "them):\n  " + "\n  ".join(problems)
    )


def test_the_closure_follows_imports_inside_functions_and_through_packages(tmp_path):
    (tmp_path / "stages" / "w").mkdir(parents=True)
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "w" / "__init__.py").write_text('"""a package that documents itself"""\n')
    (tmp_path / "stages" / "w" / "main.py").write_text("def f():\n    from stages.w import helper\n")
    (tmp_path / "stages" / "w" / "helper.py").write_text("from stages.w.deep import VALUE\nimport numpy\n")
    (tmp_path / "stages" / "w" / "deep.py").write_text("VALUE = 1\n")
    (tmp_path / "stages" / "w" / "unused.py").write_text("")
    assert import_closure("stages.w.main", tmp_path) == {
        "stages/w/__init__.py",
        "stages/w/main.py",
        "stages/w/helper.py",
        "stages/w/deep.py",
    }


def dvc_yaml_paths(root: Path = REPO) -> set[str]:
    """Every data path dvc.yaml names (stage deps, outs, metrics and plots, and the top-level plots), with its
    `${...}` interpolations written as the paths modules write them: `{name}`."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    entries = [
        entry
        for stage in stage_definitions(root).values()
        for field in ("deps", "outs", "metrics", "plots")
        for entry in stage.get(field, [])
    ]
    entries += dvc.get("plots", [])
    names = (next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries)
    return {re.sub(r"\$\{[^}]+\}", "{name}", name) for name in names if name.startswith("data/")}


def paths_module_values(root: Path = REPO) -> set[str]:
    """The path constants of every workload's paths module."""
    values = set()
    for module in sorted(root.glob("stages/*/paths.py")):
        namespace: dict = {}
        exec(compile(module.read_text(), str(module), "exec"), namespace)
        values |= {
            value
            for name, value in namespace.items()
            if name.isupper() and isinstance(value, str) and value.startswith("data/")
        }
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
    return {
        stage
        for stage in stages
        if module in import_closure(command_module(definitions[stage.split("@")[0]]["cmd"]), root)
    }


@pytest.mark.slow
def test_editing_shared_code_or_a_params_default_marks_exactly_the_stages_that_import_it(movielens_chain, tmp_path):
    project = clone_project(movielens_chain, tmp_path / "project")
    assert changed_stages(project) == set()
    edits = {
        "stages/common/training.py": ("return float(current)", "return float(current) * 1.0"),
        "stages/movielens/params.py": (
            "dropout_hidden: float = Field(default=0.75",
            "dropout_hidden: float = Field(default=0.7",
        ),
    }
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
        "movielens_train@dot",
        "movielens_train@bias",
        "movielens_train@nn",
    }
    assert "movielens_download" in importers("stages/movielens/params.py", CHAIN, project.root)


def test_the_overlay_plots_show_every_model_in_params():
    from stages.dogscats.params import MODELS as HEADS

    graph = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    overlays = {next(iter(p)): next(iter(p.values())) for p in graph["plots"] if isinstance(p, dict)}
    text_models, imdb_models = params["text"]["models"], params["imdb"]["models"]
    expected = {  # NB-SVM's steps are C values (imdb.nbsvm) and a word model's loss is per word: not on these axes
        "movielens_val_mse": (params["movielens"]["models"], "val_mse"),
        "imdb_val_accuracy": (imdb_models, "val_accuracy"),
        "text_val_loss_per_char": ([m for m, mp in text_models.items() if mp["kind"] != "word_lstm"], "val_loss"),
        "dogscats_val_accuracy": (HEADS, "val_accuracy"),
    }
    for plot, (models, column) in expected.items():
        workload = plot.split("_")[0]
        assert overlays[plot]["y"] == {f"data/{workload}/history/{m}.csv": column for m in models}, plot
