"""Atomic file and folder writes: a killed stage never leaves an output that looks complete."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class DiskFullError(OSError):
    """No space (or over a file-size limit) while writing an output; the previous output is untouched."""


def _is_disk_full(err: BaseException) -> bool:
    # some writers wrap the OS error and keep only its text; numpy reports the short write itself
    text = str(err)
    return (
        getattr(err, "errno", None) in _FULL
        or "No space left" in text
        or "File too large" in text
        or ("requested and" in text and "written" in text)
    )


@contextlib.contextmanager
def _explain_disk_full(path: Path) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        if isinstance(err, DiskFullError) or not _is_disk_full(err):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left while writing {path} ({err}); its previous version, if any, "
            "is unchanged. Free disk space (or move the project or its .dvc/cache) and re-run the stage",
        ) from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffixes last: Keras checks them (model.save: .keras, save_weights: .weights.h5)
    suffixes = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name.removesuffix(suffixes)}.", suffix=f".tmp{suffixes}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        with _explain_disk_full(path):
            yield tmp
            _fsync(tmp)  # the data reaches the disk before the new name does
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; swap it in only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _explain_disk_full(path):
            yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _split_timings(metrics: dict) -> tuple[dict, dict]:
    kept, timings = {}, {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            kept[key], inner = _split_timings(value)
            if inner:
                timings[key] = inner
        elif key.endswith(("seconds", "_per_s")):
            timings[key] = value
        else:
            kept[key] = value
    return kept, timings


def write_metrics(path: str | os.PathLike, timings_path: str | os.PathLike, metrics: dict) -> None:
    """A stage's metrics JSON without its timings: the keys ending in 'seconds' or '_per_s' (nested ones too) go to
    `timings_path` instead (data/<workload>/timings/).

    Timings differ on every run; kept apart, the metrics file is byte-identical whenever the computation is, so
    the stages that read it (imdb_compare reads data/imdb/metrics) are not rerun. Nothing may depend on timings/.
    Timings carry the machine's load average (1, 5, 15 min) at their end: a time taken beside other work reads so.
    """
    kept, timings = _split_timings(metrics)
    write_json(path, kept)
    if timings:
        timings["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    write_json(timings_path, timings)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    # Never unpickle data: an .npy file from elsewhere must not run code.
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def write_parquet(path: str | os.PathLike, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


# the earliest date a zip entry can carry; also written as metadata.json's date_saved
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def save_keras(path: str | os.PathLike, model) -> None:
    """model.save, made byte-reproducible: the same model (architecture, weights, optimizer state) gives the same
    bytes, so DVC skips the stages that read it after a deterministic rerun.

    Keras stamps the save time into metadata.json (date_saved) and the weights entry's zip date, and numbers the
    objects its config shares (a dtype policy in every layer) by their memory address: all three are rewritten.
    model.weights.h5 needs nothing: h5py creates datasets without object times (track_times=False), and its groups
    carry none in HDF5's default file format (tests/test_io.py saves on both sides of a second boundary).
    """
    with atomic_path(path) as tmp:
        raw = tmp.with_name(tmp.name.removesuffix(".keras") + ".raw.keras")  # Keras insists on the suffix
        try:
            model.save(raw)
            _rewrite_keras_zip(raw, tmp)
        finally:
            raw.unlink(missing_ok=True)


def _rewrite_keras_zip(source: Path, target: Path) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        # Keras' order, except assets/, which it adds in os.listdir order
        for entry in sorted(src.infolist(), key=lambda e: e.filename if e.filename.startswith("assets/") else ""):
            info = zipfile.ZipInfo(entry.filename, date_time=_FIXED_DATE)
            info.compress_type, info.create_system = entry.compress_type, 3  # 3: Unix, whatever the OS
            info.external_attr = (0o40755 << 16 | 0x10) if entry.is_dir() else 0o100644 << 16
            if entry.filename == "metadata.json":
                metadata = json.loads(src.read(entry))
                # kept, not removed: the loader ignores it but keras.saving.KerasFileEditor prints it
                metadata["date_saved"] = "{:04}-{:02}-{:02}@{:02}:{:02}:{:02}".format(*_FIXED_DATE)
                dst.writestr(info, json.dumps(metadata))
            elif entry.filename == "config.json":
                dst.writestr(info, json.dumps(_renumber_shared_objects(json.loads(src.read(entry)), {})))
            else:  # the weights: streamed, they can be large
                info.file_size = entry.file_size  # decides zip64 the way Keras' own write did
                with src.open(entry) as reader, dst.open(info, "w") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)


def _renumber_shared_objects(node, numbers: dict[int, int]):
    """shared_object_id id(obj) values replaced by 1, 2, ... in order of first appearance: the loader only matches
    equal ids."""
    if isinstance(node, dict):
        if isinstance(node.get("shared_object_id"), int):
            node["shared_object_id"] = numbers.setdefault(node["shared_object_id"], len(numbers) + 1)
        for value in node.values():
            _renumber_shared_objects(value, numbers)
    elif isinstance(node, list):
        for value in node:
            _renumber_shared_objects(value, numbers)
    return node


def load_keras(path: str | os.PathLike):
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no such model; reproduce the stage that trains it first (`dvc repro` "
            "or `python -m pipelines.flow` with this stage as the target)"
        )
    import keras

    # safe_mode refuses models that carry executable code (Lambda bytecode)
    return keras.models.load_model(path, safe_mode=True)


def save_figure(path: str | os.PathLike, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
