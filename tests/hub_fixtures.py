"""pytest fixtures that point the real huggingface_hub client at a FakeHub on 127.0.0.1.

conftest.py registers this module as a pytest plugin, so any test can ask for `fake_hub` or
`fast_retries` by name.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.file_download
import pytest
from fake_hub import FakeHub
from huggingface_hub import constants


@pytest.fixture
def fake_hub(monkeypatch):
    """A running FakeHub; HF_ENDPOINT and huggingface_hub's import-time copies of it point there."""
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        # huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, when it is first imported,
        # into `constants` (and builds the resolve-URL template and the set of hub hosts from them).
        # Setting the env var now is not enough for code that relies on those defaults instead of
        # passing endpoint=/cache_dir= explicitly, so patch the copies too (restored after the test).
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # Never send a real token of the machine running the tests to the fake hub, or read one.
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE"):
            monkeypatch.delenv(var, raising=False)
        if os.environ.get("HF_HOME"):  # conftest's isolated HF_HOME, mirrored into the import-time copies
            home = Path(os.environ["HF_HOME"])
            monkeypatch.setattr(constants, "HF_HOME", str(home))
            monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
            monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        yield hub


@pytest.fixture
def fast_retries(monkeypatch):
    """huggingface_hub sleeps 1 s before each resume attempt of a broken download; skip the wait."""
    fake_time = SimpleNamespace(sleep=lambda seconds: None)
    monkeypatch.setattr(huggingface_hub.file_download, "time", fake_time)
