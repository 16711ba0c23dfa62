"""Where the IMDB stages read and write: the paths dvc.yaml declares, written once here
(tests/test_stage_deps.py holds dvc.yaml to them). `{name}` is a model's key under imdb.models."""

ARCHIVE = "data/imdb/raw/aclImdb_v1.tar.gz"
TOKENIZED = "data/imdb/tokenized"
VOCAB = f"{TOKENIZED}/vocab.csv"
MODELS_DIR = "data/imdb/models"
MODEL = f"{MODELS_DIR}/{{name}}.keras"
HISTORY = "data/imdb/history/{name}.csv"
METRICS_DIR = "data/imdb/metrics"
TRAIN_METRICS = f"{METRICS_DIR}/train_{{name}}.json"
TRAIN_TIMINGS = "data/imdb/timings/train_{name}.json"  # timings apart: no stage depends on them
METRICS = f"{METRICS_DIR}/{{name}}.json"
CURVES = "data/imdb/plots/{name}_curves.png"
ROC = "data/imdb/eval/{name}_roc.csv"
PREDICTIONS = "data/imdb/eval/{name}_predictions.csv"
CONFUSION_PLOT = "data/imdb/plots/{name}_confusion.png"
ROC_PLOT = "data/imdb/plots/{name}_roc.png"
COMPARISON = "data/imdb/comparison"
EMBEDDINGS = "data/imdb/embeddings"
NGRAMS = "data/imdb/ngrams"
BENCHMARK_RECORDS = "benchmarks/results/imdb.json"  # the seed statistics imdb_compare shows (committed records)
