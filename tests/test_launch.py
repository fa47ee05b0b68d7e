"""The one load path: a typed request, the memory check counting the projector as setup's plan does,
and the projector rule."""

from dataclasses import replace

import pytest
from conftest import FIXTURES

from edge.errors import AudioError, MemoryFitError
from edge.launch import LoadRequest, ProjectorUse, SettingsOverrides, load_model, prepare_run
from edge.model.memory import check_fits, fit_on_device

TINY = FIXTURES / "gemma4-tiny"
MODEL, MMPROJ = TINY / "tiny-gemma-4-E2B.gguf", TINY / "mmproj-tiny-gemma-4-E2B.gguf"


def test_the_load_time_check_counts_the_projector_as_setup_does():
    plan = prepare_run(LoadRequest(model=str(MODEL), mmproj=MMPROJ, overrides=SettingsOverrides(n_ctx=2048)))
    lines = {line.label: line.bytes for line in plan.memory.lines}
    assert lines["projector (mmproj)"] == MMPROJ.stat().st_size
    # Setup's check of imported files runs the same policy on the same numbers.
    profile = plan.choice.profile
    setup_settings, setup_report = fit_on_device(
        plan.model_info,
        plan.resolved.settings,
        plan.device,
        MMPROJ.stat().st_size,
        os_headroom_mb=profile.os_headroom_mb,
    )
    assert setup_settings == plan.resolved.settings
    assert [(x.label, x.bytes) for x in setup_report.lines] == [(x.label, x.bytes) for x in plan.memory.lines]
    text_only = prepare_run(LoadRequest(model=str(MODEL), overrides=SettingsOverrides(n_ctx=2048)))
    assert "projector (mmproj)" not in {line.label for line in text_only.memory.lines}


def test_a_model_that_cannot_fit_is_refused_with_the_numbers():
    plan = prepare_run(LoadRequest(model=str(MODEL), mmproj=MMPROJ))
    report = check_fits(plan.model_info, plan.resolved.settings, plan.device, MMPROJ.stat().st_size)
    tiny_device = replace(plan.device, total_memory_bytes=report.total_bytes // 4)
    with pytest.raises(MemoryFitError, match=r"needs .* but this machine has .* over\); lower --ctx"):
        fit_on_device(plan.model_info, plan.resolved.settings, tiny_device, MMPROJ.stat().st_size, what=MODEL.name)


def test_hearing_without_a_projector_is_refused_before_any_load(demo_gguf):
    plan = prepare_run(LoadRequest(model=str(demo_gguf)))
    with pytest.raises(AudioError, match="--mmproj"):
        load_model(plan, ProjectorUse.HEARING)
