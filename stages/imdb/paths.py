"""Where the IMDB stages read and write: the paths dvc.yaml declares, written once here
(tests/test_stage_deps.py holds dvc.yaml to them). `{name}` is a model's key under imdb.models, or NBSVM."""

NBSVM = "nbsvm"  # the NB-SVM model's name in the paths below (imdb_nbsvm_train, imdb_nbsvm_evaluate; params imdb.nbsvm)

ARCHIVE = "data/imdb/raw/aclImdb_v1.tar.gz"
TOKENIZED = "data/imdb/tokenized"
VOCAB = f"{TOKENIZED}/vocab.csv"
VALID_MASK = f"{TOKENIZED}/valid.npy"  # which training reviews validate
TRAIN_LABELS = f"{TOKENIZED}/train_y.npy"
GLOVE = "data/imdb/glove"  # the vocabulary's GloVe matrix (imdb_glove_matrix)
GLOVE_EMBEDDING = f"{GLOVE}/embedding.npy"
IN_GLOVE = f"{GLOVE}/in_glove.npy"
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
