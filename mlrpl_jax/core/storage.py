"""Where a run reads and writes: one path layer, `etils.epath`, for local paths and gs:// alike.

Every file of a run besides its dataset goes through `epath.Path`: the workdir's checkpoints,
metrics.jsonl, TensorBoard events and results.json, the dry run's dry_run.json, sweep tables and
plots, the pretrained backbone and the label embeddings. A local path behaves as a plain file;
`gs://bucket/...` reaches Cloud Storage through gcsfs (the `gcs` extra; docs: launch/README.md).

Cloud Storage holds whole objects: a write becomes visible when its file is closed, and there
is no append, so logs on it are rewritten whole when flushed (`WholeObjectWriter`). The TFDS
array_record reader opens local files only, so a data_dir on gs:// is refused before any work,
with the command that stages it to local disk (core/run_inputs.py).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from etils import epath

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (gs://bucket/...) rather than a local path."""
    return bool(_URI_SCHEME.match(os.fspath(path)))


def absolute(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path; a local one made absolute against the working directory."""
    return epath.Path(path if is_remote(path) else os.path.abspath(path))


def write_json(path: epath.Path, value: Any) -> None:
    """Writes `value` as indented JSON to `path` (a remote object appears whole on close)."""
    with path.open("w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)


class WholeObjectWriter:
    """A remote file written by appending: Cloud Storage has no append and shows an object only
    once it is closed, so every `flush` after new writes uploads the object whole."""

    def __init__(self, path: epath.Path, initial: bytes = b""):
        self._path = path
        self._content = bytearray(initial)
        self._uploaded = len(initial)

    def write(self, data: bytes) -> None:
        self._content += data

    def flush(self) -> None:
        if len(self._content) != self._uploaded:
            self._path.write_bytes(bytes(self._content))
            self._uploaded = len(self._content)

    def close(self) -> None:
        self.flush()


class JsonLinesLog:
    """A log of one JSON object per line that survives a crash after every `append`: appended
    to a local file, or rewritten whole on remote storage (WholeObjectWriter), starting from
    what the object already holds when a run resumes."""

    def __init__(self, path: epath.Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_remote(path):
            self._file = WholeObjectWriter(path, path.read_bytes() if path.exists() else b"")
        else:
            self._file = path.open("ab")

    def append(self, record: dict[str, Any]) -> None:
        self._file.write((json.dumps(record) + "\n").encode("utf-8"))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
