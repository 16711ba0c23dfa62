"""Atomic file and folder writes: a killed stage never leaves an output that looks complete."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class DiskFullError(OSError):
    """No space (or over a file-size limit) while writing an output; the previous output is untouched."""


def _is_disk_full(err: BaseException) -> bool:
    # some writers wrap the OS error and keep only its text; numpy reports the short write itself
    text = str(err)
    return (getattr(err, "errno", None) in _FULL or "No space left" in text or "File too large" in text
            or ("requested and" in text and "written" in text))


@contextlib.contextmanager
def _explain_disk_full(path: Path) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        if isinstance(err, DiskFullError) or not _is_disk_full(err):
            raise
        raise DiskFullError(errno.ENOSPC, f"no space left while writing {path} ({err}); its previous version, if any, "
                            "is unchanged. Free disk space (or move the project or its .dvc/cache) and re-run the stage") from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffixes last: Keras checks them (model.save: .keras, save_weights: .weights.h5)
    suffixes = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.removesuffix(suffixes)}.", suffix=f".tmp{suffixes}",
                               dir=path.parent)
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


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


def save_keras(path: str | os.PathLike, model) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_keras(path: str | os.PathLike):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such model; reproduce the stage that trains it first (`dvc repro` "
                                "or `python -m pipelines.flow` with this stage as the target)")
    import keras
    # safe_mode refuses models that carry executable code (Lambda bytecode)
    return keras.models.load_model(path, safe_mode=True)


def save_figure(path: str | os.PathLike, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
