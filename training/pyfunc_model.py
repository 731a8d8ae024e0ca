"""MLflow pyfunc wrapper (model-from-code) so MLflow's own tools can load a trained model.

``mlflow.pyfunc.load_model("models:/cultural-recsys@champion").predict(df)`` takes a frame
with a ``user_id`` column (and optionally ``n``) and returns ``user_id, rank, item_id, score``
with the engine's business rules applied at the current time.
"""

from __future__ import annotations

import time

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from recsys.bundle import ModelBundle
from recsys.delivery import DeliveryEngine
from recsys.query import Filters


class CulturalRecommender(PythonModel):
    def load_context(self, context) -> None:
        self.engine = DeliveryEngine(ModelBundle.load(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        n = int((params or {}).get("n", 10))
        filters = Filters(at=time.time())
        rows = []
        for user_id in model_input["user_id"].astype(str):
            for rank, item in enumerate(self.engine.for_user(user_id, n, filters, diversity=0.0).items, start=1):
                rows.append({"user_id": user_id, "rank": rank, "item_id": item.item_id, "score": item.score})
        return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


mlflow.models.set_model(CulturalRecommender())
