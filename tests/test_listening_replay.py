"""The listening policy's replay (edge/bench/listening_replay.py), the basis of docs/performance.md's
Pi 5 figures: checked against costs worked out by hand."""

from __future__ import annotations

import pytest

from edge.bench.listening_replay import PrefillRates, first_token_s, prefill_needed

FLAT = PrefillRates({1: 50.0})


def test_rates_interpolate_between_measured_batches_and_hold_beyond():
    rates = PrefillRates({12: 30.0, 24: 40.0, 512: 60.0})
    assert rates.tps(6) == 30.0 and rates.tps(18) == 35.0 and rates.tps(1000) == 60.0
    assert rates.seconds(30, 24) == pytest.approx(24 / 40.0 + 6 / 30.0)


def test_a_question_heard_whole_costs_its_encoding_and_every_row():
    # 2 s: 50 rows and 10 text tokens at 50 tok/s, 2 s of speech at 0.1 s each.
    assert first_token_s(2, early=False, encode_s_per_s=0.1, rates=FLAT) == pytest.approx(0.2 + 60 / 50)


def test_heard_while_spoken_leaves_only_the_tail_when_listening_keeps_up():
    # 5 s, steps each second, batches of 24: the last step (at 4 s) prefills 96 rows; at the end the
    # whole 5 s window is encoded again (it is under the 7.7 s warm-up) and 29 rows + 10 tokens remain.
    t = first_token_s(5, early=True, encode_s_per_s=0.01, rates=PrefillRates({1: 1000.0}))
    assert t == pytest.approx(5 * 0.01 + 39 / 1000.0)


def test_a_slow_board_falls_behind_and_the_factor_found_meets_the_goal():
    slow = PrefillRates({1: 20.0})  # under the 25 rows a second speech brings
    behind = first_token_s(5, early=True, encode_s_per_s=0.2, rates=slow)
    assert behind > first_token_s(5, early=False, encode_s_per_s=0.2, rates=slow) * 0.5
    factor = prefill_needed(5, 2.5, encode_s_per_s=0.2, rates=slow, step_s=1.0, batch=24)
    met = first_token_s(5, early=True, encode_s_per_s=0.2 / factor, rates=slow.scaled(factor))
    assert factor > 1 and met <= 2.5 + 1e-6
    assert first_token_s(5, early=True, encode_s_per_s=0.2 / (factor * 0.95), rates=slow.scaled(factor * 0.95)) > 2.5
