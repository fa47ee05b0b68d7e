"""A bounded fuzz run over what edge-gemma parses from outside (tests/fuzz_targets.py).

Derandomized, so CI runs the same cases every time; scripts/fuzz.py runs the same targets for longer
with fresh randomness. Each case must give a result or a one-line EdgeError, never anything else.
"""

import fuzz_targets as targets
import pytest
from hypothesis import HealthCheck, given, settings

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@BOUNDED
@given(targets.mutated_gguf())
def test_gguf_header_checker(data):
    targets.gguf_target(data)


@BOUNDED
@given(targets.profile_toml())
def test_profile_toml(data):
    targets.profile_target(data)


@BOUNDED
@given(targets.audio_bytes())
def test_audio_file_decoding(data):
    targets.audio_target(data)


@pytest.fixture(scope="module")
def hub_for_fuzzing():
    from fake_hub import FakeHub

    with FakeHub() as hub, pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", hub.endpoint)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.delenv("HF_TOKEN", raising=False)
        yield hub


@settings(BOUNDED, max_examples=60)
@given(targets.hub_model_info())
def test_hub_json_answers(hub_for_fuzzing, body):
    targets.hub_target(hub_for_fuzzing, "ggml-org/gemma-4-E2B-it-GGUF", body)
