"""Where the MovieLens stages read and write: the paths dvc.yaml declares, written once here
(tests/test_stage_deps.py holds dvc.yaml to them). `{name}` is a model's key under movielens.models."""

RAW = "data/movielens/raw"
PREPARED = "data/movielens/prepared"
BASELINES = "data/movielens/metrics/baselines.json"
MODEL = "data/movielens/models/{name}.keras"
HISTORY = "data/movielens/history/{name}.csv"
TRAIN_METRICS = "data/movielens/metrics/train_{name}.json"
TRAIN_TIMINGS = "data/movielens/timings/train_{name}.json"  # timings apart: no stage depends on them
CURVES = "data/movielens/plots/{name}_curves.png"
METRICS = "data/movielens/metrics/{name}.json"
ANALYSIS = "data/movielens/analysis"
