"""The context budget's arithmetic: what is dropped, what is kept, the pinned system prompt, the reserve."""

import pytest

from edge.errors import ContextFullError
from edge.model.context_budget import audio_tokens_for, fit_history


def words(messages):
    """A stand-in tokenizer for arithmetic: one token per word, 3 per message for the turn markup."""
    return sum(len(m["content"].split()) + 3 for m in messages)


def turn(i, size=10):
    return [
        {"role": "user", "content": " ".join([f"q{i}"] * size)},
        {"role": "assistant", "content": " ".join([f"a{i}"] * size)},
    ]


SYSTEM = {"role": "system", "content": "be brief " * 5}  # 10 words
NEW = {"role": "user", "content": "next question"}


def test_everything_is_kept_while_it_fits():
    history = [SYSTEM] + turn(1) + turn(2)
    fitted = fit_history(history, NEW, n_ctx=200, reserve=50, count_tokens=words)
    assert fitted.history == history and fitted.dropped_turns == 0 and fitted.note is None
    assert fitted.prompt_tokens == words(history + [NEW])


def test_half_the_old_turns_go_at_once_and_the_system_prompt_stays():
    history = [SYSTEM] + [m for i in range(8) for m in turn(i)]  # 13 + 8 * 26 = 221 tokens
    fitted = fit_history(history, NEW, n_ctx=200, reserve=40, count_tokens=words)
    assert fitted.history[0] == SYSTEM
    assert fitted.dropped_turns == 4  # half of 8 in one step, not one turn at a time
    assert fitted.history[1:] == [m for i in range(4, 8) for m in turn(i)]  # the newest, in order
    assert fitted.note == "context: dropped 4 old turns"
    assert fitted.prompt_tokens + 40 <= 200


def test_drops_continue_by_halves_until_it_fits():
    history = [SYSTEM] + [m for i in range(8) for m in turn(i)]
    fitted = fit_history(history, NEW, n_ctx=100, reserve=40, count_tokens=words)
    assert fitted.dropped_turns == 4 + 2 + 1  # 8 -> 4 -> 2 -> 1 turn left
    assert fitted.history[1:] == turn(7)


def test_a_message_too_big_even_alone_is_a_clear_error_with_the_numbers():
    huge = {"role": "user", "content": "word " * 300}
    with pytest.raises(
        ContextFullError,
        match=r"this message needs 316 tokens plus 64 reserved .* holds 256 "
        r"\(124 over\): raise --ctx",
    ):
        fit_history([SYSTEM] + turn(1), huge, n_ctx=256, reserve=64, count_tokens=words)


def test_a_spoken_turn_reserves_its_audio_before_the_encoder_runs():
    assert audio_tokens_for(2.0) == 50 + 8
    assert audio_tokens_for(30.0) == 750 + 8
    assert audio_tokens_for(45.0) == 1125 + 16  # two 30 s pieces, each with its markers
    history = [SYSTEM] + turn(1) + turn(2)
    roomy = fit_history(history, NEW, n_ctx=200, reserve=16, count_tokens=words)
    tight = fit_history(history, NEW, n_ctx=200, reserve=16 + audio_tokens_for(5.0), count_tokens=words)
    assert roomy.dropped_turns == 0 and tight.dropped_turns == 1


def test_without_a_system_prompt_every_turn_may_go():
    history = turn(1) + turn(2)
    fitted = fit_history(history, NEW, n_ctx=45, reserve=10, count_tokens=words)
    assert fitted.history == turn(2) and fitted.dropped_turns == 1
