"""A bounded fuzz run over what edge-gemma parses from outside (tests/fuzz_targets.py).

Derandomized, so CI runs the same cases every time; scripts/fuzz.py runs the same targets for longer
with fresh randomness. Each case must give a result or a one-line EdgeError, never anything else.
"""

import fuzz_targets as targets
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings

from edge.errors import EdgeError

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
    info = accepted_or_refused(targets.gguf_target(data))
    if info is not None:
        assert info.file_size == len(data) and info.architecture and info.tensors


@BOUNDED
@given(targets.profile_toml())
def test_profile_toml(data):
    profile = accepted_or_refused(targets.profile_target(data))
    if profile is not None:
        assert profile.n_ctx >= 1 and profile.quants


@BOUNDED
@given(targets.audio_bytes())
# A 1 Hz, 8-bit WAV of one full-scale sample: resampled to 16 kHz it rang past 1.0 (found in CI).
@example(
    b"RIFF%\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x01\x00\x00\x00"
    b"\x01\x00\x08\x00data\x01\x00\x00\x00\x00"
)
def test_audio_file_decoding(data):
    pcm = accepted_or_refused(targets.audio_target(data))
    if pcm is not None:
        assert pcm.dtype == np.float32 and pcm.ndim == 1 and np.isfinite(pcm).all() and np.abs(pcm).max(initial=0) <= 1


@BOUNDED
@given(targets.image_bytes())
def test_image_decoding(capfd, data):
    picture = accepted_or_refused(targets.image_target(data))
    if picture is not None:
        assert picture.rgb.dtype == np.uint8 and picture.rgb.ndim == 3 and picture.rgb.shape[2] == 3
    assert capfd.readouterr().err == ""  # nothing else reaches the user's terminal: no decoder's own logs


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
    listing = accepted_or_refused(targets.hub_target(hub_for_fuzzing, "ggml-org/gemma-4-E2B-it-GGUF", body))
    if listing is not None:
        assert all((f.size is None or f.size >= 0) and f.name for f in listing.files)


def accepted_or_refused(outcome):
    """A result (returned for the test to check), or a refusal that is one line saying what to do."""
    if isinstance(outcome, EdgeError):
        message = str(outcome)
        assert message and "\n" not in message and "Traceback" not in message, message
        return None
    assert outcome is not None
    return outcome
