"""The runs the app can show: run folders under the checkpoints folder plus runs loaded from the Hub.

Compare only loads runs listed here, so a value sent through the API cannot make the server read an arbitrary
path. Loaded Predictors are kept in a small LRU cache keyed by run folder and file modification times.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PREDICTOR_CACHE_SIZE = 4


@dataclass(frozen=True)
class KnownRun:
    """A run the app lists: its summary and, for Hub runs, where it came from."""

    summary: Any                 # checkpoint.RunSummary
    hub: Any | None = None       # hub.HubRun

    @property
    def value(self) -> str:
        """The picker value: the run folder as an absolute path string."""
        return str(Path(self.summary.run_dir).resolve())


class RunRegistry:
    """Local run folders (rescanned on every call) and Hub runs (kept for the server's lifetime)."""

    def __init__(self, checkpoints_dir: Path) -> None:
        self.checkpoints_dir = Path(checkpoints_dir)
        self._lock = threading.Lock()
        self._hub_runs: dict[str, Any] = {}

    def add_hub_run(self, hub_run: Any) -> KnownRun:
        """Remember a downloaded Hub run and return its entry; raise CheckpointError for an invalid config.json."""
        from dogbreeds.checkpoint import summarize_run

        known = KnownRun(summarize_run(hub_run.run_dir), hub_run)
        with self._lock:
            self._hub_runs[known.value] = hub_run
        return known

    def runs(self, family: str | None = None) -> list[KnownRun]:
        """List local runs (newest first) then Hub runs, keeping only `family` ("cnn" or "fcn") when given.

        Runs without model.safetensors (stopped before their first best epoch was saved) are left out.
        """
        from dogbreeds.checkpoint import CheckpointError, list_runs, summarize_run

        try:
            local = [KnownRun(summary) for summary in list_runs(self.checkpoints_dir)]
        except OSError as error:
            logger.warning("Cannot list runs in %s: %s", self.checkpoints_dir, error)
            local = []

        with self._lock:
            hub_runs = list(self._hub_runs.values())
        remote = []
        for hub_run in hub_runs:
            try:
                remote.append(KnownRun(summarize_run(hub_run.run_dir), hub_run))
            except (CheckpointError, OSError) as error:
                logger.warning("Hub run %s is no longer readable: %s", hub_run.label, error)

        found = [run for run in local + remote if run.summary.has_weights]
        if family is not None:
            found = [run for run in found if run.summary.family == family]
        return found

    def find(self, value: str | None) -> KnownRun | None:
        """Return the listed run whose folder is `value`, or None when `value` names no listed run."""
        if not value:
            return None
        try:
            wanted = str(Path(value).resolve())
        except (OSError, RuntimeError):
            return None
        for run in self.runs():
            if run.value == wanted:
                return run
        return None


class PredictorCache:
    """Least-recently-used cache of Predictors, keyed by run folder and the mtimes of its two files."""

    def __init__(self, capacity: int = PREDICTOR_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int, int], Any] = OrderedDict()

    def get(self, run_dir: Path | str) -> Any:
        """Return the Predictor of `run_dir`, loading it when the folder or its files changed since the last load."""
        from dogbreeds.predict import Predictor

        folder = Path(run_dir).resolve()
        key = (str(folder), _mtime_ns(folder / "model.safetensors"), _mtime_ns(folder / "config.json"))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]

            # Loading under the lock keeps two requests from loading the same large model twice.
            predictor = Predictor.from_run(folder, device="cpu")
            stale = [item for item in self._items if item[0] == key[0]]
            for item in stale:
                del self._items[item]
            self._items[key] = predictor
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
