"""Named sets of param overrides (`profiles/<name>.yaml`), run the DVC way: as an experiment.

    make run PROFILE=full                       # or: python -m pipelines.flow --profile full [--dry-run]

Before anything runs: the overrides are applied to a copy of params.yaml by DVC's own `-S` rewrite and every
section is validated; the plan lists the stages they rerun, their time on this machine (pipelines/estimate.py: a few
seconds of measurement, then one stage at a time as `dvc exp run` runs them), and whether TensorFlow sees a GPU.
Then `dvc exp run --temp` runs it in a temporary copy of the workspace, so params.yaml and the workspace's outputs
stay as they are; `dvc exp show` lists the experiment beside the default and `dvc exp apply <name>` brings it in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from pipelines import estimate
from pipelines.dvc_runner import python_env
from stages.common.cli import StageError

PROFILES = Path("profiles")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    overrides: dict[str, Any]

    def dvc_set_params(self) -> list[str]:
        """The overrides as `dvc exp run -S` arguments (Hydra's override grammar)."""
        return [arg for key, value in self.overrides.items() for arg in ("-S", f"{key}={hydra_value(value)}")]


def hydra_value(value: Any) -> str:
    """`value` in the Hydra override grammar that `dvc exp run -S key=value` takes."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return "[" + ",".join(hydra_value(v) for v in value) + "]"


def load_profile(name: str, root: Path) -> Profile:
    path = root / PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))) or "none"
        raise StageError(f"no profile '{name}': {path} does not exist (profiles: {known})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    overrides = data.get("overrides")
    if not isinstance(overrides, dict) or not overrides:
        raise StageError(f"{path}: 'overrides' must map dotted params.yaml keys to values")
    return Profile(name, str(data.get("description", "")), overrides)


def profiled_params(profile: Profile, params_file: Path) -> dict[str, Any]:
    """params.yaml with the profile's overrides, rewritten by DVC's own `-S` code and validated section by section.
    An override of a key params.yaml does not have is an error (a typo would otherwise add a key no stage reads)."""
    from dvc.utils.hydra import apply_overrides

    from pipelines.params import PipelineParams
    from stages.common.params import read_params_file, validate_section
    from stages.common.workload import registry

    default = read_params_file(params_file)
    missing = [key for key in profile.overrides if not _has_key(default, key)]
    if missing:
        raise StageError(f"profile '{profile.name}' overrides keys {params_file} does not have: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_file, copy)
        apply_overrides(str(copy), [f"{k}={hydra_value(v)}" for k, v in profile.overrides.items()])
        params = read_params_file(copy)
    schemas = {name: workload.schema for name, workload in registry().items()} | {"pipeline": PipelineParams}
    for section, schema in schemas.items():
        validate_section(section, params[section], schema, f"{params_file} with profile '{profile.name}'")
    return params


def _has_key(params: dict, dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _get(params: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        params = params[part]
    return params


def _pipeline(root: Path):
    from dvc.repo import Repo

    graph = Repo(str(root)).index.graph
    return graph, [s for s in graph.nodes if getattr(s, "cmd", None)]


def _reads(stage, key: str) -> bool:
    """Whether the stage's params deps in params.yaml cover `key` (a section of it, or a key inside it)."""
    from dvc.dependency.param import ParamsDependency

    return any(
        os.path.basename(dep.def_path) == "params.yaml"
        and any(key == p or key.startswith(f"{p}.") or p.startswith(f"{key}.") for p in dep.params)
        for dep in stage.deps
        if isinstance(dep, ParamsDependency)
    )


def readers(profile: Profile, root: Path) -> dict[str, list[str]]:
    """{override key: the stages whose params deps it changes}: an empty list is a key no stage reads."""
    _, pipeline = _pipeline(root)
    return {key: [s.addressing for s in pipeline if _reads(s, key)] for key in profile.overrides}


def rerun_graph(profile: Profile, root: Path) -> dict[str, tuple[str, ...]]:
    """The dvc.yaml stages whose params deps the overrides change and everything downstream of them, in order, each
    with the stages among them it depends on."""
    graph, pipeline = _pipeline(root)
    changed = {s for s in pipeline for key in profile.overrides if _reads(s, key)}
    affected = changed | {d for s in changed for d in nx.ancestors(graph, s)}  # edges point at a stage's deps
    order = reversed(list(nx.topological_sort(graph.subgraph(pipeline))))
    return {
        s.addressing: tuple(sorted(u.addressing for u in graph.successors(s) if u in affected))
        for s in order
        if s in affected
    }


def stages_to_rerun(profile: Profile, root: Path) -> list[str]:
    """The stages of `rerun_graph`, in order."""
    return list(rerun_graph(profile, root))


def gpu_line() -> str:
    import tensorflow as tf  # quiet: stages.common.cli, imported above, applied the environment defaults

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"TensorFlow sees {len(gpus)} GPU(s): {', '.join(g.name for g in gpus)}"
    return "TensorFlow sees no GPU: everything runs on the CPU (`make install GPU=1` on a machine with one)"


def plan(profile: Profile, root: Path) -> str:
    """What will run, and for how long on this machine, as text. Fails before anything runs if the overrides are
    invalid."""
    profiled = profiled_params(profile, root / "params.yaml")
    with contextlib.chdir(root):  # DVC names stages relative to the current folder
        upstream = rerun_graph(profile, root)
    stages = list(upstream)
    lines = [f"profile '{profile.name}': {profile.description}", "overrides:"]
    lines += [f"  {key} = {hydra_value(value)}" for key, value in profile.overrides.items()]
    lines.append(f"stages it reruns ({len(stages)}): {', '.join(stages)}")
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(profiled), encoding="utf-8")
        # `dvc exp run` runs one stage at a time
        planned = estimate.plan(upstream, profiled, params_file, root, slots=1, env=python_env()) if stages else None
    if planned:
        lines.append(planned.text)
    lines.append(gpu_line())
    return "\n".join(lines)


def run(name: str, root: Path, targets: list[str] | None = None, dry_run: bool = False) -> int:
    root = root.resolve()
    profile = load_profile(name, root)
    print(plan(profile, root), flush=True)
    if dry_run:
        return 0
    experiment = f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", experiment]
    print(f"running the DVC experiment {experiment}: dvc exp run --temp --name {experiment} -S ...", flush=True)
    done = subprocess.run([*command, *profile.dvc_set_params(), *(targets or [])], cwd=root, env=python_env())
    if done.returncode == 0:
        print(f"done: `dvc exp show` lists {experiment}; `dvc exp apply {experiment}` brings it into the workspace")
    return done.returncode
