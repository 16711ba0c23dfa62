"""Dogs vs Cats as the pipeline sees it (stages/common/workload.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stages.common.workload import Calibration, Work, Workload, measured_rate, read_if_there
from stages.dogscats.params import DogsCatsParams

# Photos a class before dogscats_prepare has counted them: the mirror's, the release's
PHOTOS_PER_CLASS = {"mirror": 4000, "release": 12_500}
HEADS = ("dense", "bn_inserted", "bn_scratch")


def photos_per_class(params: Mapping, root: Path) -> float:
    """The photos a class will use: at most max_per_class (null: all) of the photos a class the archive holds, as
    the last prepare counted them, else as the mirror or the release holds them."""
    cap = params["dogscats"]["prepare"]["max_per_class"]
    files = read_if_there(root / "data/dogscats/prepared/report.json").get("files_per_class") or {}
    source = PHOTOS_PER_CLASS["mirror" if os.environ.get("LESSON5_MIRROR") else "release"]
    available = sum(files.values()) / len(files) if files else source
    return min(cap, available) if cap else available


def work(stage: str, params: Mapping, root: Path) -> Work | None:
    """The VGG16 passes (`vgg`: photos, their mirror images, fine-tuning epochs) and the heads' epochs over the
    features (`cnn`, a Keras training rate)."""
    d = params["dogscats"]
    photos = 2 * photos_per_class(params, root)
    train_photos = photos * (1 - d["prepare"]["valid_fraction"])
    if stage == "dogscats_features":
        return Work("vgg", photos * (2 if d["features"]["flips"] else 1))
    if stage == "dogscats_finetune" and d["finetune"]["enabled"]:
        return Work("vgg", d["finetune"]["epochs"] * train_photos)
    if stage == "dogscats_train":
        epochs = sum(d["train"][head]["epochs"] for head in HEADS)
        return Work("cnn", epochs * train_photos * (2 if d["train"]["flips"] else 1))
    return None


def resolved_precision(p: DogsCatsParams) -> str:
    from stages.common.precision import machine_precision

    return machine_precision(p.features.precision)


def vgg_images_per_s(p: DogsCatsParams, batch: int = 8) -> float:
    """Images/s through the VGG16 conv base (random weights) at the features' size, in the policy they resolve to."""
    import numpy as np

    from stages.dogscats.vgg import conv_base

    size = p.features.input_size
    model = conv_base(size, None, resolved_precision(p))
    images = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    return measured_rate(lambda: model.predict_on_batch(images), batch)


WORKLOAD = Workload(
    name="dogscats",
    description="VGG16 features, BatchNorm inserted into a trained dense head, block 5 fine-tuned",
    schema=DogsCatsParams,
    headlines={"val_accuracy": True, "val_log_loss": False},
    work=work,
    calibrations={"vgg": Calibration("VGG16", "images/s", vgg_images_per_s, resolved_precision)},
)
