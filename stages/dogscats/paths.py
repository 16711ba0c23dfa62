"""Where the Dogs vs Cats stages read and write: the paths dvc.yaml declares, written once here
(tests/test_stage_deps.py holds dvc.yaml to them). `{name}` is a head's name (dogscats.params.MODELS)."""

ARCHIVE = "data/dogscats/raw/kagglecatsanddogs.zip"
WEIGHTS_DIR = "data/dogscats/weights"
WEIGHTS = f"{WEIGHTS_DIR}/vgg16_notop.h5"
PREPARED = "data/dogscats/prepared"
FEATURES = "data/dogscats/features"
PHOTO_FEATURES = "features.npy"  # in FEATURES, one row per manifest row
FLIPPED_FEATURES = "features_flipped.npy"  # in FEATURES, the same rows, each image mirrored left-right
FEATURES_INFO = "info.json"  # in FEATURES: {"precision": the Keras dtype policy VGG16 computed in}
FEATURES_METRICS = "data/dogscats/metrics/features.json"
FEATURES_TIMINGS = "data/dogscats/timings/features.json"  # timings apart: no stage depends on them
MODELS_DIR = "data/dogscats/models"
MODEL = f"{MODELS_DIR}/{{name}}.keras"
HISTORY = "data/dogscats/history/{name}.csv"
TRAIN_METRICS = "data/dogscats/metrics/train.json"
TRAIN_TIMINGS = "data/dogscats/timings/train.json"
EVALUATION = "data/dogscats/evaluation"
EVALUATE_METRICS = "data/dogscats/metrics/evaluate.json"
FINETUNE = "data/dogscats/finetune"
FINETUNE_METRICS = "data/dogscats/metrics/finetune.json"
FINETUNE_TIMINGS = "data/dogscats/timings/finetune.json"
