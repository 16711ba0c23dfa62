"""Named sets of param overrides (`profiles/<name>.yaml`), run the DVC way: as an experiment.

    make run PROFILE=full                       # or: python -m pipelines.flow --profile full [--dry-run]

Before anything runs: the overrides are applied to a copy of params.yaml by DVC's own `-S` rewrite and every
section is validated; the plan lists the stages they rerun, an estimate of the long ones from the throughputs
measured in this checkout (data/*/timings) or recorded in benchmarks/results, and whether TensorFlow sees a GPU.
Then `dvc exp run --temp` runs it in a temporary copy of the workspace, so params.yaml and the workspace's outputs
stay as they are; `dvc exp show` lists the experiment beside the default and `dvc exp apply <name>` brings it in.
"""

from __future__ import annotations

import contextlib
import json
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

from pipelines.dvc_runner import python_env
from stages.common.cli import StageError

PROFILES = Path("profiles")
# Photos per class when max_per_class is null and no prepare stats are at hand: the mirror's, the release's
MIRROR_PER_CLASS, RELEASE_PER_CLASS = 4000, 12500


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    overrides: dict[str, Any]

    def dvc_set_params(self) -> list[str]:
        """The overrides as `dvc exp run -S` arguments (Hydra's override grammar)."""
        return [arg for key, value in self.overrides.items() for arg in ("-S", f"{key}={hydra_value(value)}")]


@dataclass(frozen=True)
class Cost:
    stage: str
    seconds: float | None
    basis: str


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

    from pipelines.flow import PipelineParams
    from stages.common.params import read_params_file, validate_section
    from stages.dogscats.params import DogsCatsParams
    from stages.glove.params import GloveParams
    from stages.imdb.params import ImdbParams
    from stages.movielens.params import MovieLensParams
    from stages.text.params import TextParams

    default = read_params_file(params_file)
    missing = [key for key in profile.overrides if not _has_key(default, key)]
    if missing:
        raise StageError(f"profile '{profile.name}' overrides keys {params_file} does not have: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_file, copy)
        apply_overrides(str(copy), [f"{k}={hydra_value(v)}" for k, v in profile.overrides.items()])
        params = read_params_file(copy)
    schemas = {
        "movielens": MovieLensParams,
        "imdb": ImdbParams,
        "glove": GloveParams,
        "dogscats": DogsCatsParams,
        "text": TextParams,
        "pipeline": PipelineParams,
    }
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


def stages_to_rerun(profile: Profile, root: Path) -> list[str]:
    """The dvc.yaml stages whose params deps the overrides change, and everything downstream of them, in order."""
    graph, pipeline = _pipeline(root)
    changed = {s for s in pipeline for key in profile.overrides if _reads(s, key)}
    affected = changed | {d for s in changed for d in nx.ancestors(graph, s)}  # edges point at a stage's deps
    order = reversed(list(nx.topological_sort(graph.subgraph(pipeline))))
    return [s.addressing for s in order if s in affected]


def _read_json(root: Path, path: str) -> Any:
    try:
        return json.loads((root / path).read_text())
    except (OSError, ValueError):
        return None


def _measured(root: Path, path: str, key: str) -> float | None:
    value = (_read_json(root, path) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _recorded(root: Path, workload: str, figure: str) -> float | None:
    records = _read_json(root, f"benchmarks/results/{workload}.json") or []
    return next((float(r["value"]) for r in records if r["figure"] == figure), None)


def _lstm_cost(p: dict, vocab: int = 57) -> float:
    """Multiply-adds per character of a stacked LSTM with its softmax: what its throughput scales with."""
    sizes = [p["embedding"], *p["units"]]
    return sum(4 * u * (n + u) for n, u in zip(sizes, sizes[1:], strict=False)) + sizes[-1] * vocab


def _policy_tag(precision: str | None) -> str:
    return "" if precision in (None, "float32") else f".{precision}"


def estimate(stages: list[str], default: dict, profiled: dict, root: Path) -> list[Cost]:
    """Seconds for the stages that dominate a full-size run, from measured throughputs; None where none is at hand.

    Throughputs come from this checkout's last run (data/*/timings, with the cores shared as `make run` shares
    them) or else from benchmarks/results; the result is a guide to hours, not a promise."""
    costs = []
    prepared = _measured(root, "data/dogscats/prepared/report.json", "usable")
    per_class = (
        _get(profiled, "dogscats.prepare.max_per_class")
        or (prepared / 2 if prepared else None)
        or (MIRROR_PER_CLASS if os.environ.get("LESSON5_MIRROR") else RELEASE_PER_CLASS)
    )
    photos = 2 * per_class
    default_photos = 2 * (_get(default, "dogscats.prepare.max_per_class") or per_class)
    if "dogscats_features" in stages:
        # the benchmark's records of a 16-bit policy carry its name (dogscats.per_class_128.mixed_bfloat16....)
        features_policy = _policy_tag(_get(profiled, "dogscats.features.precision"))
        rate = _measured(root, "data/dogscats/timings/features.json", "steady_images_per_s") or (
            _recorded(root, "dogscats", f"dogscats.per_class_128{features_policy}.features_images_per_s")
            if features_policy
            else _recorded(root, "dogscats", "dogscats.per_class_4000.flips.features_images_per_s")
        )
        passes = 2 if _get(profiled, "dogscats.features.flips") else 1
        costs.append(
            Cost(
                "dogscats_features",
                photos * passes / rate if rate else None,
                f"{photos:,.0f} photos x {passes} pass(es) at {rate or 0:.2f} images/s",
            )
        )
    if "dogscats_train" in stages:
        heads = _read_json(root, "data/dogscats/timings/train.json") or {}
        seconds = sum(head.get("seconds", 0) for head in heads.values() if isinstance(head, dict)) or None
        flips = 2 if _get(profiled, "dogscats.train.flips") else 1
        width = _get(profiled, "dogscats.train.head.hidden") / _get(default, "dogscats.train.head.hidden")
        scale = photos / default_photos * flips * width
        costs.append(
            Cost(
                "dogscats_train",
                seconds * scale if seconds else None,
                f"the last run's {seconds or 0:.0f} s x {scale:.1f} (photos, flips, head width)",
            )
        )
    if "dogscats_finetune" in stages and _get(profiled, "dogscats.finetune.enabled"):
        policy = _policy_tag(_get(profiled, "dogscats.finetune.precision"))
        rate = _recorded(root, "dogscats", f"dogscats.per_class_128{policy}.finetune.images_per_s")
        epochs = _get(profiled, "dogscats.finetune.epochs")
        costs.append(
            Cost(
                "dogscats_finetune",
                epochs * photos / rate if rate else None,
                f"{epochs} epoch(s) x {photos:,.0f} photos through VGG16 at {rate or 0:.2f} images/s",
            )
        )
    if "text_train@char_lstm" in stages:
        p, d = _get(profiled, "text.models.char_lstm"), _get(default, "text.models.char_lstm")
        rate = _measured(root, "data/text/timings/train_char_lstm.json", "train_chars_per_s") or _recorded(
            root, "text", "text.char_lstm.tokens_per_s"
        )
        chars = _measured(root, "data/text/prepared/stats.json", "n_train_chars") or 540_805  # Nietzsche's
        scale = _lstm_cost(p) / _lstm_cost(d)
        costs.append(
            Cost(
                "text_train@char_lstm",
                p["epochs"] * chars * scale / rate if rate else None,
                f"{p['epochs']} epochs x {chars:,.0f} chars at {rate or 0:,.0f} chars/s / {scale:.1f} (LSTM width)",
            )
        )
    return costs


def gpu_line() -> str:
    import tensorflow as tf  # quiet: stages.common.cli, imported above, applied the environment defaults

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"TensorFlow sees {len(gpus)} GPU(s): {', '.join(g.name for g in gpus)}"
    return "TensorFlow sees no GPU: everything runs on the CPU (`make install GPU=1` on a machine with one)"


def plan(profile: Profile, root: Path) -> str:
    """What will run, as text. Fails before anything runs if the overrides are invalid."""
    default = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    profiled = profiled_params(profile, root / "params.yaml")
    with contextlib.chdir(root):  # DVC names stages relative to the current folder
        stages = stages_to_rerun(profile, root)
    costs = estimate(stages, default, profiled, root)
    lines = [f"profile '{profile.name}': {profile.description}", "overrides:"]
    lines += [f"  {key} = {hydra_value(value)}" for key, value in profile.overrides.items()]
    lines.append(f"stages it reruns ({len(stages)}): {', '.join(stages)}")
    lines.append("estimate of the long stages on this machine:")
    for cost in costs:
        took = f"{cost.seconds / 3600:5.1f} h" if cost.seconds else "    ? "
        lines.append(f"  {cost.stage:<22} {took}  ({cost.basis})")
    known = sum(c.seconds for c in costs if c.seconds)
    lines.append(f"  in all, at least {known / 3600:.1f} h with the stages run one at a time")
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
