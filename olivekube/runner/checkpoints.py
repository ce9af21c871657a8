"""Training checkpoints in the cache, so that a retried attempt resumes where the last one stopped.

The trainer writes a checkpoint folder (adapter, optimizer, scheduler, RNG states, trainer state with
the step and so the data position) every `save_steps`, and once more at SIGTERM. Each is published to
`<cache>/checkpoints/<namespace>/<workflow>/<content key>/step-<N>` like a pass output, all or nothing with its
manifest last, and then listed in `steps.json` beside them. A new attempt of the same pass (same
content key) fetches the newest listed checkpoint whose files match their digests and resumes from
it; a partial or corrupt one is skipped, never loaded. `steps.json` is written with a conditional
write (as the output pointer), so two writers never drop each other's steps. After the pass's output
is published the checkpoints go: olivekube wrote them, and the output supersedes them.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from olivekube.core.errors import StorageError, WriteConflict
from olivekube.storage import store_for
from olivekube.storage.manifest import build_manifest

log = logging.getLogger(__name__)

STEPS_FILE = "steps.json"
LIST_WRITE_TRIES = 20


@dataclass(frozen=True)
class Restored:
    """A checkpoint fetched for resuming: the trainer's step and its local folder."""

    step: int
    folder: Path


class CheckpointStore:
    """The checkpoints of one pass (one content key) under `root`, keeping the newest `keep`."""

    def __init__(self, root: str, keep: int | None = 2) -> None:
        self.root = root.rstrip("/")
        self.store = store_for(self.root)
        self.keep = keep

    def _uri(self, step: int) -> str:
        return f"{self.root}/step-{step:09d}"

    def steps(self) -> list[int]:
        """The listed checkpoints' steps, newest first."""
        return self._parse(self.store.read_text(f"{self.root}/{STEPS_FILE}"))

    def _parse(self, text: str | None) -> list[int]:
        if not text:
            return []
        try:
            return sorted({int(step) for step in json.loads(text)["steps"]}, reverse=True)
        except (ValueError, KeyError, TypeError):
            log.warning("%s/%s is not a list of steps; no checkpoint is resumed", self.root, STEPS_FILE)
            return []

    def save(self, folder: Path, step: int) -> None:
        """Publish the trainer's checkpoint folder as the one of `step`, list it, prune older ones.
        The list is written only if nobody wrote it since it was read (a conditional write), so a
        step another writer listed meanwhile is never dropped."""
        self.store.publish(folder, self._uri(step), build_manifest(folder, {"step": step}))
        listing = f"{self.root}/{STEPS_FILE}"
        for attempt in range(LIST_WRITE_TRIES):
            text, seen = self.store.read_text_versioned(listing)
            steps = sorted({step, *self._parse(text)}, reverse=True)
            kept, dropped = (steps[: self.keep], steps[self.keep :]) if self.keep else (steps, [])
            try:
                self.store.write_text_if(listing, json.dumps({"steps": kept}), seen)
                break
            except WriteConflict:
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        else:
            raise StorageError(f"{listing}: other writers changed it {LIST_WRITE_TRIES} times in a row")
        for old in dropped:  # unlisted first, then deleted: a reader never picks a half-deleted one
            self.store.remove(self._uri(old))

    def restore(self, dest: Path) -> Restored | None:
        """The newest complete checkpoint, fetched into `dest/step-N` and verified; None when there is none."""
        for step in self.steps():
            folder = dest / f"step-{step}"
            try:
                manifest = self.store.read_manifest(self._uri(step))
                if manifest is None:
                    raise StorageError(f"{self._uri(step)}: no manifest (a checkpoint cut off while written)")
                self.store.fetch(self._uri(step), folder)
            except (StorageError, OSError, ValueError) as exc:
                log.warning("skipping checkpoint of step %d: %s", step, exc)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            return Restored(step, folder)
        return None

    def clear(self) -> None:
        """Remove every checkpoint of this pass (after its output is published)."""
        steps = self.steps()
        if not steps:
            return
        self.store.write_text(f"{self.root}/{STEPS_FILE}", json.dumps({"steps": []}))
        for step in steps:
            self.store.remove(self._uri(step))
