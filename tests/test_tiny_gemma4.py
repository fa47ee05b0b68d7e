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
from edge.model.runner import LoadedModel
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
def llama():
    _llama_cpp()
    assert TEXT_GGUF.is_file() and MMPROJ.is_file(), "run scripts/make_tiny_gemma4.py"
    # A small ubatch keeps the logits buffer (n_vocab x n_ubatch floats) near 256 MB, not 512.
    # Through the runner, so the load obeys this CPU's kernel verdict (edge/model/backend.py).
    with LoadedModel(TEXT_GGUF, RunSettings(n_ctx=2048, n_batch=256, n_ubatch=256)) as loaded:
        loaded.llama.set_seed(7)
        yield loaded.llama


@pytest.fixture(scope="module")
def audio(llama):
    from edge.model.mtmd import MtmdAudio

    with MtmdAudio(llama, MMPROJ) as a:
        yield a


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


def test_generates_n_tokens(llama):
    tokens = llama.tokenize(b"The quick brown fox", add_bos=True)
    llama.reset()
    llama.eval(tokens)
    out = []
    for _ in range(12):  # step by hand: random weights may well pick <eos>, which must not stop us
        tok = llama.sample(temp=0.0)
        out.append(tok)
        llama.eval([tok])
    assert len(out) == 12 and all(0 <= t < llama.n_vocab() for t in out)
    assert llama.n_tokens == len(tokens) + 12


# --- chat template and BOS --------------------------------------------------------------------


def test_chat_template_renders_gemma4_turns_with_one_bos(llama, audio):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata["tokenizer.chat_template"]
    fmt = Jinja2ChatFormatter(template, eos_token="<eos>", bos_token="<bos>")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": audio.marker + "What did I say?"},
    ]
    rendered = fmt(messages=messages)
    assert rendered.prompt == (
        "<bos><|turn>system\nBe brief.<turn|>\n"
        f"<|turn>user\n{audio.marker}What did I say?<turn|>\n"
        "<|turn>model\n<|channel>thought\n<channel|>"
    )  # thinking off

    # The template already starts with <bos>: tokenizing with add_bos=True would double it.
    raw = rendered.prompt.replace(audio.marker, "").encode()
    assert llama.tokenize(raw, add_bos=True, special=True)[:2] == [BOS, BOS]
    toks = llama.tokenize(raw, add_bos=not rendered.added_special, special=True)
    assert toks[:2] == [BOS, TURN_OPEN] and toks.count(BOS) == 1

    # The audio path tokenizes through libmtmd; it must not add a second <bos> either.
    audio.eval_prompt_with_audio(llama, rendered.prompt, np.full(SR, 0.01, dtype=np.float32))
    ids = llama.input_ids[: llama.n_tokens].tolist()
    assert ids[:2] == [BOS, TURN_OPEN] and ids.count(BOS) == 1


# --- audio through libmtmd --------------------------------------------------------------------


def test_mtmd_opens_the_mmproj_with_audio_at_16khz(audio):
    mtmd_cpp = _llama_cpp().mtmd_cpp
    assert mtmd_cpp.mtmd_support_audio(audio._ctx)
    assert audio.audio_sample_rate == 16000
    assert audio.supports_vision  # the tiny mmproj carries the vision tower too


def test_two_seconds_of_speech_become_about_25_tokens_per_second(llama, audio, speech):
    pcm = speech[: 2 * SR]
    assert len(pcm) == 2 * SR and np.abs(pcm).max() > 0.05  # real speech, not silence
    result = audio.eval_prompt_with_audio(llama, _user_turn(audio.marker), pcm)
    assert result.n_chunks == 1
    assert abs(result.n_audio_tokens - 50) <= 2
    assert result.n_text_tokens > 0 and result.encode_ms > 0
    assert result.n_past == llama.n_tokens == result.n_text_tokens + result.n_audio_tokens

    # The audio embeddings sit between <|audio> and <audio|>, and the prompt's text follows.
    ids = llama.input_ids[: llama.n_tokens].tolist()
    start = ids.index(AUDIO_OPEN) + 1
    assert ids[start + result.n_audio_tokens] == AUDIO_CLOSE
    assert ids[-3:] == llama.tokenize(b"<|turn>model\n", add_bos=False, special=True)[-3:]

    # Ordinary sampling continues from the cached prompt without re-evaluating it.
    generated = []
    for tok in llama.generate(ids, temp=0.0):
        generated.append(tok)
        if len(generated) == 4:
            break
    assert len(generated) == 4 and llama.n_tokens == result.n_past + 3


def test_45_seconds_make_two_audio_chunks_and_still_evaluate(llama, audio, speech):
    gap = np.zeros(SR // 4, dtype=np.float32)
    one = np.concatenate([speech, gap])
    pcm = np.tile(one, 45 * SR // len(one) + 1)[: 45 * SR]
    result = audio.eval_prompt_with_audio(llama, _user_turn(audio.marker), pcm)
    assert result.n_chunks == 2  # libmtmd cuts at 30 s
    assert abs(result.n_audio_tokens - 45 * 25) <= 4
    assert result.n_past == llama.n_tokens
    assert llama.sample(temp=0.0) >= 0


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
def test_bad_buffers_are_refused_before_libmtmd(llama, audio, name):
    before = llama.n_tokens
    with pytest.raises(AudioError):
        audio.eval_prompt_with_audio(llama, _user_turn(audio.marker), BAD_BUFFERS[name])
    assert llama.n_tokens == before  # nothing was evaluated


def test_check_pcm_clips_and_pads_a_tiny_tail_after_30s():
    from edge.model.mtmd import MIN_SAMPLES_AT_16K, check_pcm

    loud = np.linspace(-3, 3, SR, dtype=np.float32)
    out = check_pcm(loud)
    assert out.dtype == np.float32 and out.min() == -1.0 and out.max() == 1.0
    assert loud.max() == 3.0  # the caller's buffer is left alone
    tail = check_pcm(np.zeros(30 * SR + 1, dtype=np.float32))
    assert len(tail) == 30 * SR + MIN_SAMPLES_AT_16K


@pytest.mark.parametrize("prompt", ["no marker here", "<__media__> twice <__media__>"])
def test_prompt_needs_exactly_one_marker(llama, audio, prompt):
    with pytest.raises(AudioError, match="exactly once"):
        audio.eval_prompt_with_audio(llama, prompt, np.zeros(SR, dtype=np.float32))


def test_mmproj_without_audio_names_setup(llama, tmp_path):
    from edge.model.mtmd import MtmdAudio

    # Flip clip.has_audio_encoder to false: a vision-only mmproj, as some publishers ship.
    data = bytearray(MMPROJ.read_bytes())
    key = b"clip.has_audio_encoder"
    at = data.index(key) + len(key)
    assert data[at : at + 4] == (7).to_bytes(4, "little") and data[at + 4] == 1  # GGUF bool, true
    data[at + 4] = 0
    vision_only = tmp_path / "mmproj-vision-only.gguf"
    vision_only.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="edge-gemma setup"):
        MtmdAudio(llama, vision_only)
    with pytest.raises(ModelFileError, match="edge-gemma setup"):
        MtmdAudio(llama, tmp_path / "missing.gguf")


def test_closed_mmproj_refuses_work(llama):
    from edge.model.mtmd import MtmdAudio

    a = MtmdAudio(llama, MMPROJ, warmup=False)
    a.close()
    a.close()  # idempotent
    with pytest.raises(AudioError, match="closed"):
        a.eval_prompt_with_audio(llama, _user_turn(a.marker), np.zeros(SR, dtype=np.float32))


def test_fixture_stays_small():
    total = sum(p.stat().st_size for p in (TEXT_GGUF, MMPROJ))
    assert total < 40 * 2**20
    assert (TINY / "README.md").is_file()
