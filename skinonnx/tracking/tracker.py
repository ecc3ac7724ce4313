"""One MLflow run, written from a background thread: the caller never waits for the store, and a failure
(server down, read-only store, MLflow missing) warns once and turns tracking off; it never stops the work."""

from __future__ import annotations

import logging
import math
import numbers
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .store import experiment_name, local_artifact_root

PARAM_CHARS = 500  # MLflow's smallest limit on a parameter's value across store versions
FINISH_WAIT_S = 30.0  # the most a finished run waits for its queued writes before going on without them
_FAILED_URIS: set[str] = set()  # warned once per store and process; later runs on it do not retry
_LOCK = threading.Lock()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def client_for(uri: str):
    """An ``MlflowClient`` for ``uri`` with short network retries (a dead server costs seconds, not minutes)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # their INFO lines (creating tables...) are not ours; set after import,
        logging.getLogger(name).setLevel(logging.WARNING)  # which configures mlflow's logger

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client, uri: str) -> str:
    """The experiment's id, created on first use (artifacts beside an embedded store); two processes creating it
    at once both get it."""
    name = experiment_name()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=local_artifact_root(uri))
    except Exception:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def warn_failure(uri: str, exc: BaseException, warn: Callable[[str], None]) -> None:
    with _LOCK:
        first = uri not in _FAILED_URIS
        _FAILED_URIS.add(uri)
    if first:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError):
            reason = f"{reason}; install it with pip install 'skinonnx[track]'"
        warn(f"warning: experiment tracking to {uri} failed ({type(exc).__name__}: {reason}); the work goes on "
             "without tracking")


class Tracker:
    """An MLflow run (new, resumed by ``run_id``, or a child of ``parent``: a Tracker, or a run id) fed through a
    queue.

    Every public method returns at once; :meth:`finish` waits at most ``FINISH_WAIT_S`` for the queue."""

    def __init__(self, uri: str, *, run_name: str, run_id: str | None = None, parent: Tracker | str | None = None,
                 tags: Mapping[str, str] | None = None, warn: Callable[[str], None] = _stderr,
                 on_start: Callable[[str], None] | None = None) -> None:
        self.uri, self.warn = uri, warn
        self.failed = uri in _FAILED_URIS
        self._client: Any = None
        self._run_id: Future[str | None] = Future()
        self._queue: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()
        self._submit(lambda: self._start(run_name, run_id, parent, dict(tags or {}), on_start), self._run_id)

    # --- the worker ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            call, done = item
            if self.failed:
                done.set_result(None)
                continue
            try:
                done.set_result(call())
            except BaseException as exc:  # tracking never stops the work
                self.failed = True
                warn_failure(self.uri, exc, self.warn)
                done.set_result(None)

    def _submit(self, call: Callable[[], Any], done: Future | None = None) -> Future:
        done = done if done is not None else Future()
        if self.failed:
            done.set_result(None)
        else:
            self._queue.put((call, done))
        return done

    def _start(self, run_name: str, run_id: str | None, parent: Tracker | str | None, tags: dict[str, str],
               on_start: Callable[[str], None] | None) -> str:
        self._client = client_for(self.uri)
        if run_id:
            self._client.update_run(run_id, status="RUNNING")
        else:
            parent_id = parent.run_id() if isinstance(parent, Tracker) else parent  # a run id from another process
            if parent_id:
                tags["mlflow.parentRunId"] = parent_id
            run = self._client.create_run(experiment_id(self._client, self.uri), run_name=run_name, tags=tags)
            run_id = run.info.run_id
        if on_start is not None:
            on_start(run_id)
        return run_id

    # --- what callers use ---------------------------------------------------------------------------------
    def run_id(self, timeout: float = FINISH_WAIT_S) -> str | None:
        """The run's id once it exists (None when tracking failed or the store did not answer in time)."""
        try:
            return self._run_id.result(timeout)
        except TimeoutError:
            return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from_items = [(str(k), "" if v is None else str(v)[:PARAM_CHARS]) for k, v in params.items()]

        def call() -> None:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in from_items]
            for i in range(0, len(items), 100):  # MLflow's batch limit on parameters
                self._client.log_batch(self._run_id.result(), params=items[i:i + 100])
        self._submit(call)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)
        values = {str(k): float(v) for k, v in metrics.items()
                  if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))}

        def call() -> None:
            from mlflow.entities import Metric

            self._client.log_batch(self._run_id.result(),
                                   metrics=[Metric(k, v, stamp, step or 0) for k, v in values.items()])
        if values:
            self._submit(call)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        def call() -> None:
            for key, value in tags.items():
                self._client.set_tag(self._run_id.result(), key, str(value))
        self._submit(call)

    def log_files(self, paths: Iterable[str | Path], folder: str | None = None) -> None:
        """Files that exist now (others are skipped), copied into the run's artifacts (under ``folder``)."""
        present = [Path(p) for p in paths if Path(p).is_file()]

        def call() -> None:
            for path in present:
                self._client.log_artifact(self._run_id.result(), str(path), artifact_path=folder)
        if present:
            self._submit(call)

    def log_folder(self, folder: str | Path, artifact_path: str | None = None) -> None:
        def call() -> None:
            self._client.log_artifacts(self._run_id.result(), str(folder), artifact_path=artifact_path)
        if Path(folder).is_dir():
            self._submit(call)

    def finish(self, status: str = "FINISHED", wait_s: float = FINISH_WAIT_S) -> bool:
        """End the run (FINISHED, FAILED or KILLED) and wait at most ``wait_s`` for the queued writes; True when
        everything reached the store."""
        done = self._submit(lambda: self._client.set_terminated(self._run_id.result(), status=status))
        self._queue.put(None)
        try:
            done.result(wait_s)
        except TimeoutError:
            self.warn(f"warning: experiment tracking to {self.uri} did not answer within {wait_s:.0f} s; "
                      "going on without waiting for it")
            return False
        return not self.failed
