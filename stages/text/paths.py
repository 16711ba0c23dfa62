"""Where the text stages read and write: the paths dvc.yaml declares, written once here
(tests/test_stage_deps.py holds dvc.yaml to them). `{name}` is a model's key under text.models."""

RAW = "data/text/raw"
CORPUS = f"{RAW}/corpus.txt"
PREPARED = "data/text/prepared"
MODEL = "data/text/models/{name}.keras"
HISTORY = "data/text/history/{name}.csv"
TRAIN_METRICS = "data/text/metrics/train_{name}.json"
TRAIN_TIMINGS = "data/text/timings/train_{name}.json"  # timings apart: no stage depends on them
CURVES = "data/text/plots/{name}_curves.png"
SAMPLES = "data/text/samples/{name}"
METRICS = "data/text/metrics/{name}.json"
