"""The MLflow model of an NB-SVM: a table of review texts in (first column), P(positive) out.

Logged as MLflow "models from code" (this file is the model's code, the .keras file its artifact): nothing is
pickled. Keras' own MLflow flavour cannot serve it, as it hands the model a 2-D array of strings.
    mlflow models serve -m runs:/<run id>/model --env-manager local
    curl -d '{"dataframe_split": {"columns": ["review"], "data": [["not bad at all"]]}}' ...
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd


class ReviewSentiment(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import stages.imdb.nbsvm  # noqa: F401  registers the text standardisation the saved model uses
        from stages.common.io import load_keras

        self.model = load_keras(context.artifacts["keras_model"])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # the hint MLflow asks for; no validation
        texts = np.asarray(model_input.iloc[:, 0], dtype=str).astype(object)
        return self.model.predict(texts, batch_size=512, verbose=0).reshape(-1)


mlflow.models.set_model(ReviewSentiment())
