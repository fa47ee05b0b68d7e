"""Small JSON files that edge-gemma keeps (device config, tuned values, markers, verdicts).

Writes go through a temporary file in the same directory and os.replace, so a crash or a full disk
never leaves half a file where a whole one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (callers decide if that is an error)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
