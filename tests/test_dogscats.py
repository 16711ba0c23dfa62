"""Dogs vs Cats: bad images, the split, the VGG16 weights check, features, heads, metrics and the real DVC chain."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.dogscats import write_many_photos_zip
from stages.common.archive import CorruptArchiveError
from stages.common.cli import StageError
from stages.common.precision import machine_precision
from stages.dogscats.evaluate import confidently_wrong
from stages.dogscats.images import Unusable, load_rgb
from stages.dogscats.params import PrepareParams
from stages.dogscats.prepare import draw_order, list_files, prepare, split
from stages.dogscats.scoring import flip_averaged_scores, log_loss, scores
from tests.conftest import REPO, backed_up_epochs, kill_when_backed_up, stage_runs_by_status
from tests.factories.dogscats import THUMBS_DB, jpeg, noisy_jpeg, pet_folder, zipped

PREP = PrepareParams(seed=0, valid_fraction=0.25, max_per_class=None, max_pixels=10_000_000)


# ---------------------------------------------------------------- generated images


def png_with_alpha() -> bytes:
    image = Image.new("RGBA", (16, 16), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, 8, 16))  # left half fully transparent
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A few hundred bytes whose header claims 10 gigapixels: decoding it would need gigabytes."""
    small = io.BytesIO()
    Image.new("L", (1, 1)).save(small, format="PNG")
    data = bytearray(small.getvalue())
    ihdr = 8  # after the signature: length(4) 'IHDR'(4) width(4) height(4) ...
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    return bytes(data)


def run_prepare(tmp_path: Path, raw: Path, params: PrepareParams = PREP):
    """dogscats_prepare on the folder `raw` packed as the download stage keeps it: one zip."""
    archive = tmp_path / "kagglecatsanddogs.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(zipped(raw))
    out = tmp_path / "prepared"
    out.mkdir()
    manifest, report = prepare(archive, out, params)
    manifest.to_csv(out / "manifest.csv", index=False)
    return manifest, report, out


# ---------------------------------------------------------------- bad input: each is skipped and counted

BAD_FILES = {
    "corrupt jpeg": ("Cat/corrupt.jpg", jpeg((10, 200, 10))[:300], "corrupt image data"),
    "zero-byte file": ("Cat/empty.jpg", b"", "empty file"),
    "text named .jpg": ("Dog/notes.jpg", b"this is not a picture\n" * 20, "not an image (unknown format)"),
    "Thumbs.db": ("Dog/Thumbs.db", THUMBS_DB, "not an image (unknown format)"),
    "decompression bomb": ("Dog/bomb.png", png_bomb(), "decompression bomb"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_skipped_and_counted(tmp_path, case):
    rel, data, reason = BAD_FILES[case]
    manifest, report, _ = run_prepare(tmp_path, pet_folder(tmp_path, extra={rel: data}))
    assert report["skipped"] == 1 and report["skipped_by_reason"] == {reason: 1}
    assert report["skipped_files"][0]["file"] == rel
    assert report["usable"] == 16 and len(manifest) == 16
    assert rel not in set(manifest["source"])


@pytest.mark.parametrize(
    "size,message",
    [
        (5_000, r"5000x5000 pixels is over max_pixels=10000000"),  # our limit (a param)
        (100_000, r"Image size \(10000000000 pixels\) exceeds limit"),  # Pillow's own, beyond any max_pixels
    ],
)
def test_decompression_bomb_is_refused_from_its_header(size, message):
    bomb = png_bomb(size, size)
    assert len(bomb) < 1000
    with pytest.raises(Unusable, match=f"decompression bomb: {message}"):
        load_rgb(bomb, max_pixels=10_000_000)


@pytest.mark.parametrize(
    "name,data,original",
    [
        ("Cat/alpha.png", png_with_alpha(), "PNG RGBA"),
        ("Cat/grey.jpg", jpeg(128, mode="L"), "JPEG L"),
        ("Dog/cmyk.jpg", jpeg((0, 255, 0, 0), mode="CMYK"), "JPEG CMYK"),
        (
            "Dog/palette.gif",
            (lambda b: (Image.new("P", (8, 8), 3).save(b, format="GIF"), b.getvalue())[1])(io.BytesIO()),
            "GIF P",
        ),
    ],
    ids=["png-alpha", "greyscale", "cmyk", "palette-gif"],
)
def test_non_rgb_images_are_converted_to_rgb(tmp_path, name, data, original):
    manifest, report, out = run_prepare(tmp_path, pet_folder(tmp_path, extra={name: data}))
    assert report["skipped"] == 0 and report["converted_to_rgb"] == {original: 1}
    row = manifest[manifest["source"] == name].iloc[0]
    with Image.open(out / row["path"]) as img:
        assert img.mode == "RGB" and img.format == "PNG"
        pixels = np.asarray(img)
    if original == "PNG RGBA":  # transparent pixels become white, opaque ones keep their colour
        assert (pixels[:, :8] == 255).all() and (pixels[:, 8:] == [0, 0, 255]).all()
    if original == "JPEG L":
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_rgb_jpegs_are_copied_byte_for_byte(tmp_path):
    raw = pet_folder(tmp_path)
    manifest, _, out = run_prepare(tmp_path, raw)
    row = manifest.iloc[0]
    assert (out / row["path"]).read_bytes() == (raw / row["source"]).read_bytes()


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_empty_or_missing_class_folder_is_a_clear_error(tmp_path, folder):
    raw = pet_folder(tmp_path)
    for f in (raw / "Dog").iterdir():
        f.unlink()
    if folder == "missing":
        (raw / "Dog").rmdir()
    # an archive's empty folder holds no photos: to prepare it is the same as a missing one
    with pytest.raises(
        StageError,
        match=r"kagglecatsanddogs.zip: expected 2 class folders with files in "
        r"PetImages/ \(Cat, Dog\), found 1: Cat \(the archive layout must be",
    ):
        run_prepare(tmp_path, raw)


def test_class_of_only_bad_files_is_a_clear_error(tmp_path):
    raw = pet_folder(tmp_path)
    for f in (raw / "Cat").iterdir():
        f.write_bytes(b"")
    with pytest.raises(
        StageError,
        match=r"kagglecatsanddogs.zip: PetImages/Cat: no usable images in this class "
        r"folder \(8 files; skipped: \{'empty file': 8\}\)",
    ):
        run_prepare(tmp_path, raw)


def test_photos_are_taken_in_the_extracted_folders_order_whatever_the_archive_order(tmp_path):
    # "a/b.jpg" sorts before "a.jpg" as a path, after it as a string: the draw depends on this order
    raw = pet_folder(
        tmp_path,
        n_per_class=3,
        extra={
            "Cat/a.jpg": noisy_jpeg(1, (200, 0, 0)),
            "Cat/a/b.jpg": noisy_jpeg(2, (200, 0, 0)),
            "readme.txt": b"not a class folder",
            "Dog/Thumbs.db": b"x",
        },
    )
    folder_order = {
        c: [f.relative_to(raw).as_posix() for f in sorted((raw / c).rglob("*")) if f.is_file()] for c in ("Cat", "Dog")
    }
    assert folder_order["Cat"][:2] == ["Cat/0.jpg", "Cat/1.jpg"]
    assert folder_order["Cat"].index("Cat/a/b.jpg") < folder_order["Cat"].index("Cat/a.jpg")
    forward, backward = tmp_path / "forward.zip", tmp_path / "backward.zip"
    forward.write_bytes(zipped(raw))
    backward.write_bytes(zipped(raw, reverse=True))
    listing = list_files(backward)
    assert listing.classes == ["Cat", "Dog"] and listing.files == folder_order
    assert listing.outside == ["PetImages/readme.txt"]
    (tmp_path / "forward").mkdir()
    (tmp_path / "backward").mkdir()
    prepared = [prepare(archive, tmp_path / archive.stem, PREP) for archive in (forward, backward)]
    pd.testing.assert_frame_equal(prepared[0][0], prepared[1][0])
    assert prepared[1][1]["skipped_files"] == [
        {"file": "Dog/Thumbs.db", "reason": "not an image (unknown format)"},
        {"file": "PetImages/readme.txt", "reason": "not under PetImages/<class>/"},
    ]


def test_missing_or_damaged_archive_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="nowhere.zip: archive not found; run dogscats_download first"):
        prepare(tmp_path / "nowhere.zip", tmp_path, PREP)
    damaged = bytearray(zipped(pet_folder(tmp_path)))
    damaged[400] ^= 0xFF  # inside the first photo: its CRC no longer matches
    (tmp_path / "damaged.zip").write_bytes(damaged)
    with pytest.raises(CorruptArchiveError, match="damaged.zip: damaged archive .*download it again"):
        prepare(tmp_path / "damaged.zip", tmp_path, PREP)


# ---------------------------------------------------------------- the split


def test_split_is_stratified_in_drawn_order():
    kept = {"Cat": [f"Cat/{i}.jpg" for i in range(20)], "Dog": [f"Dog/{i}.jpg" for i in (7, 3, 9, 1, 5, 0, 2, 8)]}
    manifest = split(kept, ["Cat", "Dog"], 0.25)
    counts = manifest.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", 0): 15, ("train", 1): 6, ("valid", 0): 5, ("valid", 1): 2}
    # validation takes each class's first drawn photos
    assert set(manifest[manifest["split"] == "valid"]["source"]) == {*kept["Cat"][:5], "Dog/7.jpg", "Dog/3.jpg"}
    assert (manifest["class"] == np.where(manifest["label"] == 0, "Cat", "Dog")).all()


def test_too_few_images_for_a_split_is_a_clear_error():
    with pytest.raises(StageError, match="class 'Cat' has only 1 usable image"):
        split({"Cat": ["Cat/1.jpg"], "Dog": ["Dog/1.jpg", "Dog/2.jpg"]}, ["Cat", "Dog"], 0.25)


def test_the_draw_is_seeded_and_each_class_a_permutation():
    files = {"Cat": [f"Cat/{i}.jpg" for i in range(30)], "Dog": [f"Dog/{i}.jpg" for i in range(40)]}
    a = draw_order(files, seed=1)
    assert a == draw_order(files, seed=1) and a != draw_order(files, seed=2)
    assert all(sorted(a[c]) == sorted(files[c]) and a[c] != files[c] for c in files)


def drawn_until(order: list[str], bad: set[str], n: int) -> list[str]:
    """The shortest start of a drawn order that holds n usable photos: what a class's sample of n reads."""
    usable = np.cumsum([source not in bad for source in order])
    return order[: int(np.searchsorted(usable, n)) + 1]


def test_the_sample_is_drawn_before_decoding_and_unusable_photos_are_replaced(tmp_path):
    bad = {f"Cat/bad{i}.jpg" for i in range(3)}
    dogs = {f"Dog/{i}.jpg": noisy_jpeg(i, (60, 90, 190)) for i in range(6, 8)}
    raw = pet_folder(tmp_path, n_per_class=6, extra={**dict.fromkeys(bad, b""), **dogs})  # 9 cat files, 8 dogs
    (tmp_path / "pets.zip").write_bytes(zipped(raw))
    order = draw_order(list_files(tmp_path / "pets.zip").files, PREP.seed)

    manifest, report, _ = run_prepare(tmp_path / "capped", raw, PREP.model_copy(update={"max_per_class": 5}))
    read = {name: drawn_until(order[name], bad, 5) for name in ("Cat", "Dog")}
    bad_read = sorted(bad & set(read["Cat"]))
    assert bad_read, "seed 0 draws an unusable photo among the first 5 cats: the replacement is tested"
    for name in ("Cat", "Dog"):  # each class's first 5 usable photos in the drawn order
        assert sorted(manifest[manifest["class"] == name]["source"]) == sorted(set(read[name]) - bad)
    # only the drawn photos and their replacements are decoded
    assert report["read"] == 10 + len(bad_read) and report["not_read"] == 17 - report["read"]
    assert [s["file"] for s in report["skipped_files"]] == bad_read
    assert report["short_of_max_per_class"] == {} and report["scanned"] == 17

    # more than a class holds: all its usable photos, and the report says it came short
    manifest, report, _ = run_prepare(tmp_path / "short", raw, PREP.model_copy(update={"max_per_class": 7}))
    assert report["short_of_max_per_class"] == {"Cat": 6} and report["read"] == 16 and report["not_read"] == 1
    assert manifest["class"].value_counts().to_dict() == {"Cat": 6, "Dog": 7}


def test_a_cap_of_what_a_class_holds_keeps_every_photo_as_null_does(tmp_path):
    """The mirror holds 4,000 photos a class, the default max_per_class: the same photos, split the same way, as
    with every photo taken (null)."""
    raw = pet_folder(tmp_path, n_per_class=8)
    every, _, _ = run_prepare(tmp_path / "every", raw, PREP)
    capped, report, _ = run_prepare(tmp_path / "capped", raw, PREP.model_copy(update={"max_per_class": 8}))
    pd.testing.assert_frame_equal(every, capped)
    assert report["not_read"] == 0 and report["short_of_max_per_class"] == {}


MIRROR_PER_CLASS = 4000  # the mirror's kagglecatsanddogs_5340.zip: PetImages/{Cat,Dog}, 4,000 photos each


@pytest.mark.slow  # 33,000 photos decoded: about 25 s on one core
def test_the_release_gives_as_many_photos_as_the_mirror_by_default_and_all_with_the_full_profile(tmp_path):
    """As many photos a class as Microsoft's release holds (12,500, tiny generated JPEGs): the default params take
    the mirror's 4,000 a class, decoding no other photo; the full profile's (profiles/full.yaml applied to
    params.yaml) every photo."""
    from pipelines.profile import load_profile, profiled_params
    from stages.common.params import load_params
    from stages.dogscats.params import DogsCatsParams

    archive = tmp_path / "kagglecatsanddogs_5340.zip"
    write_many_photos_zip(archive, 12_500, distinct=50, sides=(8, 17))
    default = load_params("dogscats", DogsCatsParams, REPO / "params.yaml").prepare
    full = profiled_params(load_profile("full", REPO), REPO / "params.yaml")["dogscats"]["prepare"]
    assert default.max_per_class == MIRROR_PER_CLASS and full["max_per_class"] is None
    for name, params, per_class in (("default", default, MIRROR_PER_CLASS), ("full", PrepareParams(**full), 12_500)):
        (tmp_path / name).mkdir()
        manifest, report = prepare(archive, tmp_path / name, params)
        assert manifest["class"].value_counts().to_dict() == {"Cat": per_class, "Dog": per_class}, name
        assert report["read"] == 2 * per_class and report["not_read"] == 25_000 - 2 * per_class, name
        assert len(list((tmp_path / name / "images").iterdir())) == 2 * per_class


# ---------------------------------------------------------------- the VGG16 weights file


def write_legacy_weights(model, path: Path, replace: dict[str, list[np.ndarray]] | None = None) -> Path:
    """A Keras HDF5 weights file laid out like vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5."""
    replace = replace or {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"3"
        for layer in model.layers:
            group = f.create_group(layer.name)
            values = replace.get(layer.name, [np.asarray(w) for w in layer.weights])
            names = [f"{layer.name}/{'kernel' if i == 0 else 'bias'}" for i in range(len(values))]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, value in zip(names, values):
                group.create_dataset(name, data=value)
    return path


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A weights file for the real VGG16 architecture (random weights) and the model they came from."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    return write_legacy_weights(model, tmp_path_factory.mktemp("weights") / "vgg16_notop.h5"), model


def test_weights_file_loads_into_the_real_vgg16(vgg_weights):
    from stages.dogscats.vgg import conv_base

    path, source = vgg_weights
    loaded = conv_base(32, path)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.output.shape[1:] == (1, 1, 512)


def test_weights_of_the_wrong_shape_name_the_layer(vgg_weights, tmp_path):
    from stages.dogscats.vgg import conv_base

    _, source = vgg_weights
    bad = write_legacy_weights(
        source,
        tmp_path / "bad.h5",
        replace={"block3_conv2": [np.zeros((3, 3, 128, 256), "float32"), np.zeros(256, "float32")]},
    )
    with pytest.raises(
        StageError,
        match=r"weights for layer 'block3_conv2' have shapes \[\(3, 3, 128, 256\), "
        r"\(256,\)\] .* needs \[\(3, 3, 256, 256\), \(256,\)\]",
    ):
        conv_base(32, bad)


def test_weights_of_another_model_are_a_clear_error(tmp_path):
    import keras

    from stages.dogscats.vgg import conv_base

    small = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(64, 3, name="block1_conv1")])
    with pytest.raises(StageError, match="holds weights for 1 layers, vgg16 has 13 .* 'block1_conv2'"):
        conv_base(32, write_legacy_weights(small, tmp_path / "small.h5"))


def test_a_file_that_is_not_hdf5_is_a_clear_error(tmp_path):
    from stages.dogscats.vgg import conv_base

    (tmp_path / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(StageError, match="not a Keras HDF5 weights file"):
        conv_base(32, tmp_path / "truncated.h5")


# ---------------------------------------------------------------- features, heads, metrics


@pytest.mark.parametrize("flips", [False, True])
def test_features_match_the_conv_base_on_each_image(tmp_path, vgg_weights, flips):
    from stages.dogscats.features import compute_features
    from stages.dogscats.paths import FLIPPED_FEATURES
    from stages.dogscats.vgg import conv_base, load_image

    raw = pet_folder(tmp_path, n_per_class=5, extra={"Cat/alpha.png": png_with_alpha()})
    manifest, _, prepared = run_prepare(tmp_path, raw)
    out = tmp_path / "features"
    out.mkdir()
    stats = compute_features(prepared, out, vgg_weights[0], input_size=32, batch_size=4, flips=flips)
    features = np.load(out / "features.npy")
    assert features.dtype == np.float16 and features.shape == (11, 1, 1, 512)
    assert stats["images"] == 11 and stats["feature_shape"] == [1, 1, 512] and stats["images_per_s"] > 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "index.csv"), manifest)
    model = conv_base(32, vgg_weights[0])
    one = np.stack([load_image(str(prepared / p), 32).numpy() for p in manifest["path"]])
    np.testing.assert_allclose(features, model.predict(one, verbose=0), rtol=2e-3, atol=1e-3)
    assert (out / FLIPPED_FEATURES).exists() == flips and ("flipped_seconds" in stats) == flips
    if flips:  # each row is the same image mirrored left-right (axis 2 of NHWC), and that changes the features
        flipped = np.load(out / FLIPPED_FEATURES)
        np.testing.assert_allclose(flipped, model.predict(one[:, :, ::-1], verbose=0), rtol=2e-3, atol=1e-3)
        assert np.abs(flipped.astype(np.float32) - features).max() > 1e-2


@pytest.mark.parametrize("precision,compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_computes_in_16_bits_with_float32_weights_and_leaves_the_policy(
    tmp_path, vgg_weights, capsys, precision, compute
):
    import keras

    from stages.common.cpu import BFLOAT16_FLAGS, cpu_flags
    from stages.common.precision import gpu_compute_capability
    from stages.dogscats.features import compute_features
    from stages.dogscats.vgg import conv_base

    mixed = conv_base(32, vgg_weights[0], precision)
    conv = mixed.get_layer("block1_conv1")
    assert conv.compute_dtype == compute and conv.variable_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # other models built later stay float32
    # without a GPU float16 always warns, bfloat16 without AMX/AVX512_BF16
    warned, cpu = capsys.readouterr().err, gpu_compute_capability() is None
    native = bool((cpu_flags() or set()) & BFLOAT16_FLAGS)
    assert ("WARNING: mixed_float16 without a GPU" in warned) == (precision == "mixed_float16" and cpu)
    assert ("bfloat16 is emulated here" in warned) == (precision == "mixed_bfloat16" and cpu and not native)

    _, _, prepared = run_prepare(tmp_path, pet_folder(tmp_path, n_per_class=3))
    features = {}
    for policy in ("float32", precision):
        out = tmp_path / f"features-{policy}"
        out.mkdir()
        compute_features(prepared, out, vgg_weights[0], input_size=32, batch_size=4, precision=policy)
        features[policy] = np.load(out / "features.npy").astype(np.float32)
    scale = np.abs(features["float32"]).max()
    tolerance = 0.02 if compute == "float16" else 0.1  # bfloat16 keeps 8 bits of mantissa, float16 11
    np.testing.assert_allclose(features[precision], features["float32"], atol=tolerance * scale)  # round-off only


# ---------------------------------------------------------------- precision: auto


@pytest.mark.parametrize(
    "requested,flags,gpu,policy",
    [
        ("auto", {"avx512f", "amx_bf16", "amx_tile"}, None, "mixed_bfloat16"),  # Sapphire Rapids on
        ("auto", {"avx512f", "avx512_bf16"}, None, "mixed_bfloat16"),  # Cooper Lake, Zen 4
        ("auto", {"avx512f", "avx512_vnni"}, None, "float32"),  # Ice Lake: emulated bfloat16
        ("auto", set(), None, "float32"),  # a CPU without x86 flags (Arm Linux)
        ("auto", None, None, "float32"),  # no /proc/cpuinfo (macOS): unknown
        ("auto", {"avx2"}, (9, 0), "mixed_bfloat16"),  # H100
        ("auto", None, (8, 0), "mixed_bfloat16"),  # A100
        ("auto", {"amx_bf16"}, (7, 5), "mixed_float16"),  # T4: on a GPU the GPU decides, not the CPU
        ("auto", {"avx2"}, (7, 0), "mixed_float16"),  # V100
        ("auto", {"amx_bf16"}, (6, 1), "float32"),  # Pascal: no 16-bit tensor cores
        ("auto", {"avx2"}, (0, 0), "float32"),  # a GPU TensorFlow reports no compute capability for
        ("float32", {"amx_bf16"}, (9, 0), "float32"),  # an explicit policy is kept as it is
        ("mixed_bfloat16", {"avx2"}, None, "mixed_bfloat16"),
        ("mixed_float16", None, None, "mixed_float16"),
    ],
)
def test_auto_precision_is_what_the_machine_computes_natively(requested, flags, gpu, policy):
    from stages.common.precision import resolve_precision

    assert resolve_precision(requested, flags, gpu) == policy


@pytest.mark.parametrize(
    "policy,flags,gpu,says",
    [
        ("mixed_bfloat16", {"avx512f", "avx512_vnni"}, None, "CPU without AMX or AVX512_BF16: bfloat16 is emulated"),
        ("mixed_bfloat16", None, None, "flags cannot be read (no /proc/cpuinfo): bfloat16 may be emulated"),
        ("mixed_bfloat16", {"avx512_bf16"}, None, None),
        ("mixed_bfloat16", set(), (8, 0), None),
        ("mixed_float16", {"amx_bf16"}, None, "mixed_float16 without a GPU"),
        ("mixed_float16", None, (7, 0), None),
        ("float32", None, None, None),
    ],
)
def test_an_explicit_policy_this_machine_emulates_is_warned_of(policy, flags, gpu, says):
    from stages.common.precision import slow_policy_warning

    warning = slow_policy_warning(policy, flags, gpu)
    assert warning is None if says is None else says in warning


def test_cpu_flags_come_from_proc_cpuinfo_and_without_it_auto_is_float32(tmp_path, monkeypatch):
    from stages.common import cpu, precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: avx512_bf16 in a name is no flag\nflags\t\t: fpu avx512f amx_tile\n\n"
        "processor\t: 1\nflags\t\t: fpu avx512f amx_bf16\n"
    )
    assert cpu.cpu_flags(cpuinfo) == {"fpu", "avx512f", "amx_tile", "amx_bf16"}
    assert cpu.cpu_flags(tmp_path / "missing") is None
    # the machine's own answer, with /proc/cpuinfo missing as on macOS (this machine has no GPU)
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "missing")
    assert precision.gpu_compute_capability() is None
    assert precision.machine_precision("auto") == "float32"
    assert precision.machine_precision("mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setattr(cpu, "CPUINFO", cpuinfo)
    assert precision.machine_precision("auto") == "mixed_bfloat16"


@pytest.mark.parametrize("stage", ["features", "finetune"])
def test_an_unknown_precision_is_a_one_line_params_error_naming_the_allowed_values(stage):
    import typing

    import yaml

    from stages.common.params import ParamsError, validate_section
    from stages.dogscats.params import DogsCatsParams, Precision

    section = yaml.safe_load((REPO / "params.yaml").read_text())["dogscats"]
    assert section[stage]["precision"] == "auto"  # the default
    section[stage]["precision"] = "bfloat16"
    with pytest.raises(ParamsError) as error:
        validate_section("dogscats", section, DogsCatsParams)
    [line] = str(error.value).splitlines()[1:]  # under the file's name: one line
    assert line.startswith(f"  dogscats.{stage}.precision = 'bfloat16': Input should be ")
    assert all(f"'{value}'" in line for value in typing.get_args(Precision))


def test_load_image_resizes_and_uses_vgg_preprocessing(tmp_path):
    from stages.dogscats.vgg import load_image

    path = tmp_path / "red.png"
    Image.new("RGB", (50, 30), (255, 0, 0)).save(path)
    x = load_image(str(path), 40).numpy()
    assert x.shape == (40, 40, 3)
    np.testing.assert_allclose(x[20, 20], [0 - 103.939, 0 - 116.779, 255 - 123.68], atol=1e-3)  # BGR, means off


@pytest.mark.parametrize(
    "bn_statistics,bn_class", [("calibrated", "CalibratedBatchNormalization"), ("batch", "BatchNormalization")]
)
def test_the_three_heads_train_and_insertion_keeps_the_function(bn_statistics, bn_class):
    from stages.dogscats.params import TrainParams
    from stages.dogscats.train import train_head

    rng = np.random.default_rng(0)
    labels = (np.arange(240) % 2).astype("float32")
    x = rng.normal(size=(240, 2, 2, 8)).astype("float32") + labels[:, None, None, None] * 0.8
    train, valid = (x[:180], labels[:180]), (x[180:], labels[180:])
    p = TrainParams.model_validate(
        {
            "seed": 0,
            "batch_size": 32,
            "flips": False,
            "calibration_images": 64,
            "bn_statistics": bn_statistics,
            "head": {"hidden": 16, "dropout": 0.2, "l2": 0.0},
            "dense": {"epochs": 6, "learning_rate": 0.01},
            "bn_inserted": {"epochs": 3, "learning_rate": 0.001},
            "bn_scratch": {"epochs": 6, "learning_rate": 0.01},
        }
    )
    results = {}
    for name in ("dense", "bn_inserted", "bn_scratch"):
        results[name] = train_head(name, train, valid, p, dense=results.get("dense", (None,))[0])
    assert results["bn_inserted"][2]["insertion_max_abs_change"] < 1e-4
    for name, (_, history, _) in results.items():
        assert history["val_accuracy"][-1] > 0.8, name

    def names(model):
        return [layer.name for layer in model.layers]

    assert names(results["bn_inserted"][0]) == names(results["bn_scratch"][0])
    assert "fc1_bn" not in names(results["dense"][0])
    assert type(results["bn_inserted"][0].get_layer("fc1_bn")).__name__ == bn_class


def test_finetuning_trains_block5_and_the_head_and_leaves_blocks_1_to_4(tmp_path, vgg_weights):
    from stages.common.io import save_keras
    from stages.dogscats.finetune import augmentation, finetune
    from stages.dogscats.models import dense_head
    from stages.dogscats.params import FinetuneParams
    from stages.dogscats.vgg import conv_base

    raw = pet_folder(tmp_path, n_per_class=8)
    _, _, prepared = run_prepare(tmp_path, raw)
    head = dense_head((1, 1, 512), hidden=8, dropout=0.0, l2=0.0, name="dense")
    save_keras(tmp_path / "dense.keras", head)
    p = FinetuneParams(
        enabled=True, head="dense", seed=0, epochs=2, learning_rate=0.01, batch_size=4, flip=True, shift=0.1
    )
    model, history, result = finetune(prepared, vgg_weights[0], tmp_path / "dense.keras", 32, p, 1e-15)

    before = {w.path: np.asarray(w) for w in conv_base(32, vgg_weights[0]).weights}
    after = {w.path: np.asarray(w) for w in model.get_layer("vgg16").weights}
    assert before.keys() == after.keys()
    for path, value in before.items():
        moved = not np.allclose(value, after[path])
        assert moved == path.startswith("block5_"), path
    assert not np.allclose(np.asarray(head.weights[0]), np.asarray(model.get_layer("dense").weights[0]))
    assert len(history["val_accuracy"]) == 2 and result["n_valid"] == 4 and 0 <= result["val_accuracy"] <= 1
    assert np.isfinite(result["val_log_loss"])
    # augmentation changes training images only: flips and shifts move pixels, no augmentation is None
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    assert not np.allclose(np.asarray(augmentation(p)(x, training=True)), x)
    assert augmentation(p.model_copy(update={"flip": False, "shift": 0.0})) is None


def test_log_loss_is_clipped_like_kaggle():
    labels = np.array([1.0, 0.0])
    assert log_loss(labels, np.array([0.0, 0.0]), 1e-15) == pytest.approx(-np.log(1e-15) / 2, rel=1e-6)
    assert log_loss(labels, np.array([0.0, 0.0]), 0.05) == pytest.approx(-(np.log(0.05) + np.log(0.95)) / 2, rel=1e-9)
    assert log_loss(labels, np.array([0.9, 0.2]), 1e-15) == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)


def test_scores_and_confidently_wrong():
    labels = np.array([0, 0, 1, 1, 1], dtype="float32")
    p_dog = np.array([0.1, 0.9, 0.8, 0.4, 0.01])
    s = scores(labels, p_dog, 1e-15)
    assert s["val_accuracy"] == pytest.approx(0.4) and s["errors"] == 3
    assert s["confusion"] == [[1, 1], [2, 1]]
    index = pd.DataFrame({"path": list("abcde")})
    assert confidently_wrong(index, labels, p_dog, 2)["path"].tolist() == ["e", "b"]
    # averaged with the mirrored images' predictions: 0.45, 0.45, 0.85, 0.7, 0.405
    mirrored = np.array([0.8, 0.0, 0.9, 1.0, 0.8])
    averaged = flip_averaged_scores(labels, p_dog, mirrored, 1e-15)
    assert averaged == {
        "flip_averaged_val_accuracy": pytest.approx(0.8),
        "flip_averaged_errors": 1,
        "flip_averaged_val_log_loss": pytest.approx(log_loss(labels, (p_dog + mirrored) / 2, 1e-15)),
    }


def test_training_on_flips_needs_the_flipped_features():
    import yaml

    from stages.common.params import ParamsError, validate_section
    from stages.dogscats.params import DogsCatsParams

    section = yaml.safe_load((REPO / "params.yaml").read_text())["dogscats"]
    section["features"]["flips"], section["train"]["flips"] = False, True
    with pytest.raises(ParamsError, match="train.flips needs the mirrored images' features: set features.flips"):
        validate_section("dogscats", section, DogsCatsParams)
    section["features"]["flips"] = True
    assert validate_section("dogscats", section, DogsCatsParams).train.flips


# ---------------------------------------------------------------- the real DVC chain


def only_dogscats(dvc_yaml: Path) -> None:
    """Keep this workload's stages and plots: the other workloads' stages are not this test's subject."""
    import yaml

    graph = yaml.safe_load(dvc_yaml.read_text())
    graph["stages"] = {k: v for k, v in graph["stages"].items() if k.startswith("dogscats_")}
    graph["plots"] = [
        p
        for p in graph.get("plots", [])
        if str(next(iter(p)) if isinstance(p, dict) else p).startswith("data/dogscats/")
    ]
    dvc_yaml.write_text(yaml.safe_dump(graph, sort_keys=False))


@pytest.mark.slow
def test_dvc_chain_and_features_reused_when_only_the_head_changes(project, http_server, tmp_path, vgg_weights):
    only_dogscats(project.root / "dvc.yaml")
    raw = pet_folder(
        tmp_path / "src", n_per_class=12, extra={"Dog/broken.jpg": b"", "Cat/grey.jpg": jpeg(90, mode="L")}
    )
    images_url, images_sha = http_server.add("kagglecatsanddogs_5340.zip", zipped(raw))
    weights_url, weights_sha = http_server.add("vgg16_notop.h5", vgg_weights[0].read_bytes())
    fit = {"epochs": 2, "learning_rate": 0.001}
    project.set_params(
        {
            "dogscats.sources.images": {"url": images_url, "sha256": images_sha},
            "dogscats.sources.weights": {"url": weights_url, "sha256": weights_sha},
            "dogscats.prepare.max_per_class": 10,
            "dogscats.features.input_size": 32,
            "dogscats.features.batch_size": 8,
            "dogscats.features.flips": False,  # mirrored images: the kill test below
            "dogscats.train.flips": False,
            "dogscats.train.calibration_images": 16,
            "dogscats.train.head": {"hidden": 8, "dropout": 0.0, "l2": 0.0},
            "dogscats.train.dense": fit,
            "dogscats.train.bn_inserted": fit,
            "dogscats.train.bn_scratch": fit,
            "dogscats.evaluate.gallery_size": 4,
        }
    )
    project.dvc("repro", "dogscats_evaluate")
    root = project.root / "data/dogscats"
    # precision auto (the default): the policy this machine computes natively, in the metrics and on each head's run
    assert project.params["dogscats"]["features"]["precision"] == "auto"
    policy = machine_precision("auto")
    assert json.loads((root / "metrics/features.json").read_text())["precision"] == policy
    report = json.loads((root / "prepared/report.json").read_text())
    assert report["skipped_by_reason"] == {"empty file": 1} and report["converted_to_rgb"] == {"JPEG L": 1}
    assert report["used"] == {"train": {"Cat": 8, "Dog": 8}, "valid": {"Cat": 2, "Dog": 2}}  # round(2.5) == 2
    assert np.load(root / "features/features.npy").shape == (20, 1, 1, 512)
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert set(metrics) == {"dense", "bn_inserted", "bn_scratch"}
    assert all(m["n_valid"] == 4 and 0 <= m["val_accuracy"] <= 1 for m in metrics.values())
    assert (root / "evaluation/confidently_wrong.png").stat().st_size > 1000
    assert len(list((root / "models").glob("*.keras"))) == 3

    # a head change: only the heads are stale, not the features (evaluate follows the heads' new files)
    project.set_params({"dogscats.train.head": {"hidden": 12, "dropout": 0.0, "l2": 0.0}})
    changed = json.loads(project.dvc("status", "--json", "--with-deps", "dogscats_evaluate").stdout)
    assert changed == {"dogscats_train": [{"changed deps": {"params.yaml": {"dogscats.train": "modified"}}}]}

    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("lesson5-dogscats").experiment_id])
    assert len(runs) == 4  # 3 heads + evaluate
    names = {r.info.run_name: sorted(r.data.metrics) for r in runs}
    datasets = {r.info.run_name: [d.dataset.name for d in r.inputs.dataset_inputs] for r in runs}
    assert all(datasets[f"dogscats_train@{h}"] == ["dogscats-train-features"] for h in ("dense", "bn_inserted"))
    heads = [r for r in runs if r.info.run_name.startswith("dogscats_train@")]
    assert len(heads) == 3 and all(r.data.params["features_precision"] == policy for r in heads)
    heads = [set(names[f"dogscats_train@{h}"]) for h in ("dense", "bn_scratch")]  # bn_inserted adds its check
    assert heads[0] == heads[1] >= {"val_accuracy", "val_loss", "val_log_loss", "errors", "epochs", "train_seconds"}
    assert names["dogscats_evaluate"] == []  # each head's figures are on its own row, under the same names
    assert not [k for n in names.values() for k in n if k.startswith("final_") or "dense" in k or "bn_" in k]


@pytest.mark.slow
def test_killed_features_and_finetuning_resume_where_they_stopped(project, http_server, tmp_path, vgg_weights):
    """Features, heads and fine-tuning each killed part-way and resumed; on the way, mirrored images turned on
    (the features' uninterrupted rerun, the heads and evaluate on both)."""
    only_dogscats(project.root / "dvc.yaml")
    root = project.root / "data/dogscats"
    images_url, images_sha = http_server.add("kagglecatsanddogs_5340.zip", zipped(pet_folder(tmp_path / "src", 40)))
    weights_url, weights_sha = http_server.add("vgg16_notop.h5", vgg_weights[0].read_bytes())
    project.set_params(
        {
            "dogscats.sources.images": {"url": images_url, "sha256": images_sha},
            "dogscats.sources.weights": {"url": weights_url, "sha256": weights_sha},
            "dogscats.prepare.max_per_class": 40,
            # 64 px: slow enough (tens of ms an image) to be killed part-way
            "dogscats.features": {"input_size": 64, "batch_size": 2, "flips": False, "checkpoint_images": 4},
            "dogscats.train.flips": False,
            "dogscats.evaluate.gallery_size": 4,
        }
    )
    project.dvc("repro", "dogscats_prepare")
    splits = pd.read_csv(root / "prepared/manifest.csv")["split"]
    photos, n_train, n_valid = len(splits), (splits == "train").sum(), (splits == "valid").sum()
    progress = project.root / ".cache/backup/dogscats_features"
    kill_when_backed_up(project, "dogscats_features", lambda backup: any(backup.glob("*/progress.json")))
    checkpointed = json.loads(next(progress.glob("*/progress.json")).read_text())["features.npy"]
    assert 4 <= checkpointed < photos
    assert not (root / "features").exists()

    resumed = project.dvc("repro", "dogscats_features").stdout
    assert "dogscats_features: resuming features.npy at image" in resumed, resumed[-3000:]
    at = int(resumed.split("resuming features.npy at image ")[1].split()[0])
    assert checkpointed <= at < photos
    features = root / "features/features.npy"
    resumed_bytes = features.read_bytes()
    assert not progress.exists()  # removed once whole
    assert project.dvc("status", "dogscats_features").stdout.strip().endswith("Data and pipelines are up to date.")

    # mirrored images: the features stage runs again, uninterrupted, with a second pass over the mirrored images;
    # its photos' pass is byte-identical to the resumed one
    project.set_params({"dogscats.features.flips": True, "dogscats.train.flips": True})
    assert "Running stage 'dogscats_features'" in project.dvc("repro", "dogscats_features").stdout
    assert features.read_bytes() == resumed_bytes
    assert np.load(root / "features/features_flipped.npy").shape == np.load(features).shape

    fit = {"epochs": 1, "learning_rate": 0.001}
    project.set_params(
        {
            "dogscats.train.head": {"hidden": 8, "dropout": 0.0, "l2": 0.0},
            "dogscats.train.calibration_images": 16,
            **{f"dogscats.train.{head}": fit for head in ("dense", "bn_inserted", "bn_scratch")},
        }
    )
    # the heads: killed once the dense head is finished, the rerun keeps it and trains the others
    kill_when_backed_up(project, "dogscats_train", lambda backup: any(backup.glob("*/dense.json")))
    heads = project.dvc("repro", "dogscats_train").stdout
    assert "dense: kept from the interrupted run" in heads, heads[-3000:]
    assert f"training on {2 * n_train:,} images (half of them mirrored)" in heads  # twice the images
    assert len(list((root / "models").glob("*.keras"))) == 3
    assert sorted(stage_runs_by_status(project, "dogscats", "dogscats_train@dense")) == ["FINISHED"]  # tracked once
    # evaluate scores each head also averaged with the mirrored images' predictions
    project.dvc("repro", "dogscats_evaluate")
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert all(m["n_valid"] == n_valid and 0 <= m["flip_averaged_val_accuracy"] <= 1 for m in metrics.values())

    # fine-tuning block 5 on the images: off (a note, no training), then on, from the trained dense head: killed
    # after an epoch, resumed after it
    project.set_params({"dogscats.finetune.enabled": False})
    project.dvc("repro", "dogscats_finetune")
    assert json.loads((root / "metrics/finetune.json").read_text()) == {"enabled": False}
    assert "enabled is false" in (root / "finetune/DISABLED.txt").read_text()
    epochs = 3
    finetune = {"enabled": True, "epochs": epochs, "batch_size": 8, "head": "dense"}
    project.set_params({"dogscats.finetune": {**project.params["dogscats"]["finetune"], **finetune}})
    kill_when_backed_up(project, "dogscats_finetune", lambda backup: backed_up_epochs(backup) > 0)
    done = backed_up_epochs(project.root / ".cache/backup/dogscats_finetune")
    resumed = project.dvc("repro", "dogscats_finetune").stdout
    assert "dogscats_finetune: resuming after epoch" in resumed, resumed[-3000:]
    at = int(resumed.split("resuming after epoch ")[1].split()[0])
    assert done <= at < epochs and f"Epoch {at + 1}/{epochs}" in resumed and f"Epoch 1/{epochs}" not in resumed
    assert "Running stage 'dogscats_train'" not in resumed  # fine-tuning starts from the trained head
    history = pd.read_csv(root / "finetune/history.csv")
    assert len(history) == epochs and history["val_accuracy"].between(0, 1).all()
    finetuned = json.loads((root / "metrics/finetune.json").read_text())
    assert finetuned["enabled"] and finetuned["n_valid"] == n_valid and 0 <= finetuned["val_accuracy"] <= 1
    assert finetuned["precision"] == machine_precision("auto")  # precision auto (the default), resolved here
    assert json.loads((root / "timings/finetune.json").read_text())["images_per_s"] > 0
    assert (root / "finetune/model.keras").is_file() and not (root / "finetune/DISABLED.txt").exists()
    assert project.dvc("status", "dogscats_finetune").stdout.strip().endswith("Data and pipelines are up to date.")
    runs = stage_runs_by_status(project, "dogscats", "dogscats_finetune")
    assert sorted(runs) == ["FINISHED", "KILLED"]
    assert [d.dataset.name for d in runs["FINISHED"][0].inputs.dataset_inputs] == ["dogscats-train-photos"]
    logged = runs["FINISHED"][0].data.params
    assert (logged["precision"], logged["resolved_precision"]) == ("auto", finetuned["precision"])
