"""Security: nothing loads pickles or model code from data, no credentials reach params, logs or the MLflow
store, and the servers the project starts listen on 127.0.0.1 only."""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from stages.common.io import load_keras, load_npy
from stages.common.params import ParamsError, Source, read_params_file, validate_section
from tests.conftest import FAKE_SECRETS, REPO

CODE_DIRS = ("stages", "pipelines", "benchmarks")
UNSAFE_LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("joblib", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("torch", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("marshal", "loads"),
}


def project_sources() -> list[Path]:
    return sorted(p for d in CODE_DIRS if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py"))


def dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def unsafe_calls(path: Path, root: Path = REPO) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        where = f"{path.relative_to(root)}:{node.lineno} {name}()"
        head, _, last = name.rpartition(".")
        if (head.split(".")[-1] if head else "", last) in UNSAFE_LOADERS:
            problems.append(f"{where}: executes code from data")
        if name in ("np.load", "numpy.load") and not keyword_is(node, "allow_pickle", False):
            problems.append(f"{where}: needs allow_pickle=False")
        if last == "load_model" and "mlflow" not in name and not keyword_is(node, "safe_mode", True):
            problems.append(f"{where}: needs safe_mode=True")
        if last == "enable_unsafe_deserialization":
            problems.append(f"{where}: turns Keras safe mode off")
        if name == "yaml.load" and not any(k.arg == "Loader" and "Safe" in dotted(k.value) for k in node.keywords):
            problems.append(f"{where}: use yaml.safe_load")
        if keyword_is(node, "allow_pickle", True) or keyword_is(node, "safe_mode", False):
            problems.append(f"{where}: unsafe flag")
    return problems


def test_no_code_loads_pickles_or_unsafe_models():
    sources = project_sources()
    assert any(p.name == "io.py" for p in sources)
    problems = [problem for path in sources for problem in unsafe_calls(path)]
    assert problems == [], "\n".join(problems)


def test_the_checker_catches_unsafe_calls(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import numpy as np, pickle, keras\nnp.load('x')\npickle.loads(b'')\n"
        "keras.models.load_model('m.keras', safe_mode=False)\nnp.load('y', allow_pickle=True)\n"
    )
    found = "\n".join(unsafe_calls(bad, root=tmp_path))
    for needle in (
        "np.load(): needs allow_pickle=False",
        "pickle.loads(): executes code",
        "load_model(): needs safe_mode=True",
        "unsafe flag",
    ):
        assert needle in found


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"payload": "would be unpickled"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_npy(path)


def test_keras_model_with_lambda_code_is_refused_and_its_code_never_runs(tmp_path):
    import keras

    marker = tmp_path / "code-ran"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(tmp_path / "lambda.keras")
    # the same file, but the lambda now has a side effect we can see if it is ever run
    side_effect = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # no closure: serializable
    evil = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(side_effect)])
    evil.save(tmp_path / "evil.keras")
    marker.unlink(missing_ok=True)  # building the model above ran it once, here, on purpose
    for name in ("lambda.keras", "evil.keras"):
        with pytest.raises(ValueError, match="safe_mode"):
            load_keras(tmp_path / name)
    assert not marker.exists()


def test_credentials_in_a_source_url_are_refused():
    with pytest.raises(ParamsError, match="must not contain a password"):
        validate_section("src", {"url": "https://user:hunter2@example.org/x.zip", "sha256": None}, Source)
    Source(url="https://example.org/x.zip?version=2")  # a plain query is fine


def test_params_file_holds_no_credentials():
    text = (REPO / "params.yaml").read_text()
    assert not re.search(r"(?i)(password|passwd|secret|token|api[_-]?key|access[_-]?key)\s*:\s*\S", text)
    assert not re.search(r"https?://[^/\s:@]+:[^/\s@]+@", text)
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # AWS access key id
    read_params_file(REPO / "params.yaml")


def test_servers_listen_on_loopback_by_default():
    makefile = (REPO / "Makefile").read_text()
    server_lines = [
        line for line in makefile.splitlines() if re.search(r"mlflow (ui|server)|prefect server start", line)
    ]
    assert server_lines, "expected the Makefile's ui target"
    for line in server_lines:
        host = re.search(r"--host[ =](\S+)", line)
        assert host, f"no --host in: {line}"
        value = host.group(1)
        default = (
            re.search(rf"^{re.escape(value[2:-1])}\s*\??=\s*(\S+)", makefile, re.M) if value.startswith("$(") else None
        )
        assert (default.group(1) if default else value) == "127.0.0.1", line
    for path in [*project_sources(), REPO / "Makefile"]:
        assert "0.0.0.0" not in path.read_text(), f"{path} binds all interfaces"


@pytest.mark.slow
def test_a_run_with_tokens_in_the_environment_leaves_no_trace_of_them(movielens_chain):
    project = movielens_chain  # reproduced by the flow with FAKE_SECRETS in its environment
    with sqlite3.connect(project.root / "mlflow.db") as db:
        n_runs = db.execute("select count(*) from runs").fetchone()[0]
        n_params = db.execute("select count(*) from params").fetchone()[0]
    assert n_runs >= 9 and n_params > 0  # the runs really were logged (8 stages and the flow's parent)
    files = [p for p in project.root.rglob("*") if p.is_file()]
    artifact_files = [p for p in files if "artifacts" in p.parts or "mlruns" in p.parts or "mlartifacts" in p.parts]
    assert any(p.name == "MLmodel" for p in artifact_files), "the Keras models should be among the artifacts"
    assert any(".dvc" in p.parts and "cache" in p.parts for p in files) and (project.root / "dvc.lock").is_file()
    for secret in FAKE_SECRETS.values():
        assert secret not in project.flow_log
        leaks = [p for p in files if secret.encode() in p.read_bytes()]
        assert leaks == [], f"{secret} found in {leaks}"
