"""Where the GloVe stages read and write: the paths dvc.yaml declares, written once here
(tests/test_stage_deps.py holds dvc.yaml to them). `{dim}` is glove.dim."""

MEMBER = "glove.6B.{dim}d.txt"  # the archive member of one dimension
RAW = "data/glove/raw"
VECTORS = f"{RAW}/{MEMBER}"
TSNE = "data/glove/tsne"
