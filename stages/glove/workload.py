"""GloVe as the pipeline sees it (stages/common/workload.py): download and a t-SNE map, stages of fixed cost."""

from __future__ import annotations

from stages.common.workload import Workload
from stages.glove.params import GloveParams

WORKLOAD = Workload(name="glove", description="GloVe 6B word vectors and a t-SNE map of words", schema=GloveParams)
