"""The flow's parent run in each workload's experiment (`WorkloadParents`): each experiment shows its stage runs
nested under the flow run that made them, and the parent ends with their headline figures."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Mapping

from stages.common.tracking_store import experiment_name, experiment_tags, tracking_uri
from stages.common.workload import registry


class WorkloadParents:
    """The flow's parent run in each workload's experiment, created when that workload's first stage command starts
    (a no-change run adds none), so each experiment shows its stage runs nested under the flow run that made them.
    `finish` ends them with a table of their children's headline figures and the best one on the parent."""

    def __init__(self, pipeline_run_id: str | None, tags: Mapping[str, str]):
        self.pipeline_run_id, self.tags = pipeline_run_id, dict(tags)
        self.runs: dict[str, str] = {}
        self._lock = threading.Lock()

    def run_id(self, workload: str) -> str | None:
        """The workload's parent run id (created on the first call), or None when tracking is unavailable or the stage
        belongs to no workload ("")."""
        with self._lock:
            if workload and workload not in self.runs and self.pipeline_run_id:
                try:
                    self.runs[workload] = self._create(workload)
                except Exception as err:  # tracking never stops the pipeline
                    print(f"WARNING: MLflow parent run for {workload} not created ({err})", file=sys.stderr)
                    self.pipeline_run_id = None
            return self.runs.get(workload)

    def _create(self, workload: str) -> str:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri())
        name = experiment_name(workload)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name, tags=experiment_tags(workload))
        tags = {**self.tags, "mlflow.parentRunId": self.pipeline_run_id, "workload": workload}
        return client.create_run(experiment_id, run_name="pipeline", tags=tags).info.run_id

    def finish(self, failed: set[str]) -> None:
        """End each parent (FAILED when its workload is in `failed`: a stage of it did not finish), with its
        children's headline figures as the table `summary.json` and the best of each on the parent itself."""
        import mlflow

        client = mlflow.MlflowClient(tracking_uri())
        for workload, run_id in self.runs.items():
            try:
                self._summarise(client, workload, run_id)
            except Exception as err:
                print(f"WARNING: MLflow summary of {workload} not logged ({err})", file=sys.stderr)
            status = "FAILED" if workload in failed else "FINISHED"
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, status)

    @staticmethod
    def _summarise(client, workload: str, run_id: str) -> None:
        import pandas as pd

        owner = registry().get(workload)  # the figures its models are judged by (True: higher is better)
        headlines = owner.headlines if owner else {}
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
        )
        rows = [
            {"run": child.info.run_name, **{k: child.data.metrics[k] for k in headlines if k in child.data.metrics}}
            for child in children
            if "_evaluate" not in child.info.run_name  # its figures are on the training run too
        ]
        rows = [row for row in rows if len(row) > 1]
        if not rows:
            return
        table = pd.DataFrame(rows).sort_values("run")
        client.log_table(run_id, table, "summary.json")
        for metric, higher_is_better in headlines.items():
            if metric in table and table[metric].notna().any():
                best = table.loc[table[metric].idxmax() if higher_is_better else table[metric].idxmin()]
                client.log_metric(run_id, metric, float(best[metric]))
                client.set_tag(run_id, f"lesson5.best.{metric}", best["run"])
