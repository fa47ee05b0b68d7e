"""The tiny Gemma 4 fixture runs through the real llama.cpp, and audio goes in through libmtmd.

The fixture (tests/fixtures/gemma4-tiny, made by scripts/make_tiny_gemma4.py) has random weights:
these tests check shapes, counts and plumbing, never what the model says.
"""

import shutil
import subprocess
import wave

import numpy as np
import pytest
from conftest import FIXTURES, require

from edge.errors import AudioError, ModelFileError
from edge.model.engine import GREEDY, Generation, LoadedModel, Projector
from edge.model.engine.cache_record import MEDIA
from edge.settings import RunSettings

TINY = FIXTURES / "gemma4-tiny"
TEXT_GGUF = TINY / "tiny-gemma-4-E2B.gguf"
MMPROJ = TINY / "mmproj-tiny-gemma-4-E2B.gguf"
SR = 16_000
BOS, TURN_OPEN, AUDIO_OPEN, AUDIO_CLOSE = 2, 105, 256000, 258883  # ids in the real Gemma 4 vocab


def _llama_cpp():
    try:
        import llama_cpp
        from llama_cpp import mtmd_cpp  # noqa: F401  (libmtmd must be in the build)
    except (ImportError, OSError):
        llama_cpp = None
    require(llama_cpp is not None, "llama-cpp-python 0.3.36 with libmtmd")
    return llama_cpp


@pytest.fixture(scope="module")
def loaded():
    _llama_cpp()
    assert TEXT_GGUF.is_file() and MMPROJ.is_file(), "run scripts/make_tiny_gemma4.py"
    # A small ubatch keeps the logits buffer (n_vocab x n_ubatch floats) near 256 MB, not 512.
    # Through the loader, so the load obeys this CPU's kernel verdict (edge/model/backend.py).
    with LoadedModel(TEXT_GGUF, RunSettings(n_ctx=2048, n_batch=256, n_ubatch=256)) as model:
        model.attach_projector(MMPROJ)
        yield model


@pytest.fixture(scope="module")
def llama(loaded):
    return loaded.llama


@pytest.fixture(scope="module")
def engine(loaded):
    return loaded.engine


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """Real espeak-ng speech at 16 kHz mono float32, several seconds long."""
    require(shutil.which("espeak-ng") is not None, "espeak-ng")
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "Turn on the kitchen lights, then set a timer for ten minutes and read me the weather."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    with wave.open(str(wav)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    n_out = int(len(pcm) * SR / rate)  # linear resampling is plenty for a plumbing test
    return np.interp(np.arange(n_out) * rate / SR, np.arange(len(pcm)), pcm).astype(np.float32)


def _user_turn(marker: str, text: str = "Transcribe the following speech segment in English.") -> str:
    return f"<bos><|turn>user\n{marker}{text}<turn|>\n<|turn>model\n"


# --- the text model -------------------------------------------------------------------------


def test_text_model_is_gemma4_shaped_like_e2b(llama):
    llama_cpp = _llama_cpp()
    md = llama.metadata
    assert md["general.architecture"] == "gemma4"
    assert md["gemma4.block_count"] == "10"
    assert md["gemma4.attention.shared_kv_layers"] == "5"
    assert md["gemma4.attention.sliding_window"] == "512"
    assert md["gemma4.embedding_length_per_layer_input"] == "2"
    assert (md["gemma4.attention.key_length_swa"], md["gemma4.attention.key_length"]) == ("16", "32")
    assert llama_cpp.llama_model_n_swa(llama.model) == 512
    assert llama.n_vocab() == 262144  # the real Gemma 4 vocabulary


def test_generates_n_tokens(engine):
    engine.prefill("The quick brown fox")
    before = len(engine.cached)
    # max_tokens with no stop: random weights may well pick <eos> early, so count what came.
    generation = Generation(engine, "", GREEDY.with_(max_tokens=12), continues=True)
    generation.run()
    n = generation.stats.generated_tokens
    assert 1 <= n <= 12 and len(engine.cached) == before + n - (n == 12)


# --- chat template and BOS --------------------------------------------------------------------


def test_chat_template_renders_gemma4_turns_with_one_bos(llama, engine):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    marker = engine.projector.marker
    template = llama.metadata["tokenizer.chat_template"]
    fmt = Jinja2ChatFormatter(template, eos_token="<eos>", bos_token="<bos>")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": marker + "What did I say?"},
    ]
    rendered = fmt(messages=messages)
    assert rendered.prompt == (
        "<bos><|turn>system\nBe brief.<turn|>\n"
        f"<|turn>user\n{marker}What did I say?<turn|>\n"
        "<|turn>model\n<|channel>thought\n<channel|>"
    )  # thinking off

    # The template already starts with <bos>: tokenizing with add_bos=True would double it.
    raw = rendered.prompt.replace(marker, "").encode()
    assert llama.tokenize(raw, add_bos=True, special=True)[:2] == [BOS, BOS]
    # The engine adds none to a prompt that has one, with audio (libmtmd) and without.
    engine.prefill(rendered.prompt.replace(marker, ""))
    assert engine.cached[:2] == [BOS, TURN_OPEN] and engine.cached.count(BOS) == 1
    engine.prefill(rendered.prompt, [np.full(SR, 0.01, dtype=np.float32)])
    assert engine.cached[:2] == [BOS, TURN_OPEN] and engine.cached.count(BOS) == 1


# --- audio through libmtmd --------------------------------------------------------------------


def test_the_projector_hears_at_16khz_and_sees(engine):
    assert engine.projector.supports_audio
    assert engine.projector.supports_vision  # the tiny mmproj carries the vision tower too


def test_two_seconds_of_speech_become_about_25_tokens_per_second(engine, speech):
    pcm = speech[: 2 * SR]
    assert len(pcm) == 2 * SR and np.abs(pcm).max() > 0.05  # real speech, not silence
    report = engine.prefill(_user_turn(engine.projector.marker), [pcm], fresh=True)
    assert report.media_chunks == 1
    assert abs(report.media_tokens - 50) <= 2
    assert report.encode_ms > 0 and report.reused == 0
    assert report.prompt_tokens == len(engine.cached) == report.evaluated

    # The audio embeddings sit between <|audio> and <audio|>, and the prompt's text follows.
    ids = engine.cached
    start = ids.index(AUDIO_OPEN) + 1
    assert all(key < MEDIA for key in ids[start : start + report.media_tokens])  # rows by fingerprint
    assert ids[start + report.media_tokens] == AUDIO_CLOSE
    assert ids[-3:] == engine.tokenize("<|turn>model\n", bos=False)[-3:]

    # Sampling continues from the cached prompt without evaluating it again.
    generation = Generation(engine, "", GREEDY.with_(max_tokens=4), continues=True)
    generation.run()
    assert len(engine.cached) == report.prompt_tokens + generation.stats.generated_tokens - 1


def test_the_same_clip_again_is_found_in_the_cache_by_its_rows_and_another_is_not(engine, speech):
    prompt = _user_turn(engine.projector.marker)
    first = engine.prefill(prompt, [speech[: 2 * SR]])
    again = engine.prefill(prompt, [speech[: 2 * SR]])
    assert again.reused == again.prompt_tokens - 1  # all but the last token, evaluated for fresh logits
    other = engine.prefill(prompt, [speech[SR // 2 : SR // 2 + 2 * SR]])  # as long, other words
    audio_at = engine.cached.index(AUDIO_OPEN) + 1
    assert other.reused == audio_at  # the text before the audio came from the cache, the audio did not
    assert other.evaluated == other.prompt_tokens - audio_at == first.prompt_tokens - audio_at


def test_45_seconds_make_two_audio_chunks_and_still_evaluate(engine, speech):
    gap = np.zeros(SR // 4, dtype=np.float32)
    one = np.concatenate([speech, gap])
    pcm = np.tile(one, 45 * SR // len(one) + 1)[: 45 * SR]
    report = engine.prefill(_user_turn(engine.projector.marker), [pcm])
    assert report.media_chunks == 2  # libmtmd cuts at 30 s
    assert abs(report.media_tokens - 45 * 25) <= 4
    assert report.prompt_tokens == len(engine.cached)
    assert Generation(engine, "", GREEDY.with_(max_tokens=1), continues=True).run() is not None


# --- buffers that must never reach libmtmd ----------------------------------------------------

BAD_BUFFERS = {
    "empty": np.zeros(0, dtype=np.float32),
    "one sample": np.zeros(1, dtype=np.float32),  # this one aborts the process inside libmtmd
    "50 ms": np.zeros(800, dtype=np.float32),
    "nan": np.array([0.0] * 8000 + [np.nan] + [0.0] * 8000, dtype=np.float32),
    "inf": np.array([0.0] * 8000 + [np.inf] + [0.0] * 8000, dtype=np.float32),
    "float64": np.zeros(SR, dtype=np.float64),
    "int16": np.zeros(SR, dtype=np.int16),
    "stereo": np.zeros((SR, 2), dtype=np.float32),
    "list": [0.0] * SR,
}


@pytest.mark.parametrize("name", list(BAD_BUFFERS))
def test_bad_buffers_are_refused_before_libmtmd(engine, name):
    before = list(engine.cached)
    with pytest.raises(AudioError):
        engine.prefill(_user_turn(engine.projector.marker), [BAD_BUFFERS[name]])
    assert engine.cached == before  # nothing was evaluated


def test_check_pcm_clips_and_pads_a_tiny_tail_after_30s():
    from edge.model.engine.media import MIN_AUDIO_SAMPLES, check_pcm

    loud = np.linspace(-3, 3, SR, dtype=np.float32)
    out = check_pcm(loud)
    assert out.dtype == np.float32 and out.min() == -1.0 and out.max() == 1.0
    assert loud.max() == 3.0  # the caller's buffer is left alone
    tail = check_pcm(np.zeros(30 * SR + 1, dtype=np.float32))
    assert len(tail) == 30 * SR + MIN_AUDIO_SAMPLES


@pytest.mark.parametrize("prompt", ["no marker here", "<__media__> twice <__media__>"])
def test_prompt_needs_one_marker_per_clip(engine, prompt):
    with pytest.raises(AudioError, match="once per clip"):
        engine.prefill(prompt, [np.zeros(SR, dtype=np.float32)])


def test_mmproj_without_audio_names_setup(loaded, tmp_path):
    # Flip clip.has_audio_encoder to false: a vision-only mmproj, as some publishers ship.
    data = bytearray(MMPROJ.read_bytes())
    key = b"clip.has_audio_encoder"
    at = data.index(key) + len(key)
    assert data[at : at + 4] == (7).to_bytes(4, "little") and data[at + 4] == 1  # GGUF bool, true
    data[at + 4] = 0
    vision_only = tmp_path / "mmproj-vision-only.gguf"
    vision_only.write_bytes(bytes(data))
    projector = _projector(loaded, vision_only)
    try:
        with pytest.raises(AudioError, match="edge-gemma setup"):
            projector.require_audio()
    finally:
        projector.close()
    with pytest.raises(ModelFileError, match="edge-gemma setup"):
        _projector(loaded, tmp_path / "missing.gguf")


def test_closed_projector_refuses_work(loaded):
    projector = _projector(loaded, MMPROJ)
    projector.close()
    projector.close()  # idempotent
    with pytest.raises(AudioError, match="closed"):
        with projector.tokenize(_user_turn(projector.marker), [np.zeros(SR, dtype=np.float32)], add_bos=False):
            pass


def _projector(loaded, path) -> Projector:
    return Projector(
        loaded.model_handle,
        path,
        n_threads=2,
        use_gpu=False,
        flash_attn_type=0,
        verbose=False,
        lifetime=loaded.engine.lifetime,
    )
