"""Settings resolution: auto threads, clamping to this machine's cores, overrides."""

import os
from dataclasses import replace

import pytest

from edge.device.info import nominal_device
from edge.errors import UsageError
from edge.profiles import load_profiles
from edge.settings import resolve_settings

SOME_PI = nominal_device("pi5", 8)  # no cores known: auto threads fall back to this machine's


def cores_here():
    return len(os.sched_getaffinity(0))


def test_profile_values_become_settings():
    resolved = resolve_settings(load_profiles()["pi5-8gb"], SOME_PI, {"n_threads": 1, "n_threads_batch": 1})
    s = resolved.settings
    assert (s.n_ctx, s.load_mode, s.lazy_mode, s.flash_attn) == (8192, "mmap", "off", True)
    assert (s.n_threads, s.n_threads_batch) == (1, 1)


def test_more_threads_than_cores_is_clamped_with_a_note():
    resolved = resolve_settings(load_profiles()["pi5-8gb"], SOME_PI, {"n_threads": 999})
    assert resolved.settings.n_threads == cores_here()
    assert any("n_threads=999 is more than" in note for note in resolved.notes)


def test_auto_threads_use_physical_performance_cores():
    device = replace(SOME_PI, performance_cores=(0,), physical_cores=1)
    resolved = resolve_settings(load_profiles()["generic"], device)
    assert resolved.settings.n_threads == 1 and resolved.settings.n_threads_batch == 1


def test_overrides_win_and_are_checked():
    resolved = resolve_settings(load_profiles()["pi5-8gb"], SOME_PI, {"n_ctx": 512, "n_threads": None})
    assert resolved.settings.n_ctx == 512
    with pytest.raises(UsageError, match="load_mode='fast' is not allowed"):
        resolve_settings(None, SOME_PI, {"load_mode": "fast"})
    with pytest.raises(UsageError, match="unknown setting 'speed'"):
        resolve_settings(None, SOME_PI, {"speed": 2})
