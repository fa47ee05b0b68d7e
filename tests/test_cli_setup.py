"""`edge-gemma setup / plan / models` against a hub on 127.0.0.1 serving real GGUF files.

The hub serves the tiny Gemma 4 fixture under the real E2B repo and file names, so the whole path
(listing, planning, download, sha256 verification, config, smoke test, `run` with no flags) is real.
"""

import json
import os

import pytest
from cli_helpers import assert_one_line_error, edge_gemma
from conftest import FIXTURES

TINY = FIXTURES / "gemma4-tiny"
E2B_REPO = "ggml-org/gemma-4-E2B-it-GGUF"
MODEL_FILE = "gemma-4-E2B-it-Q4_K_M.gguf"
MMPROJ_FILE = "mmproj-gemma-4-E2B-it-F16.gguf"
PI5_4GB = FIXTURES / "devices" / "pi5-4gb"


@pytest.fixture
def hub(fake_hub, tmp_path):
    """E2B served by ggml-org; the other catalog repos answer 404 (setup must cope)."""
    big_q8 = tmp_path / "q8.gguf"  # sparse: listed at 9.3 GB, never downloaded, for planner refusals
    with big_q8.open("wb") as f:
        f.truncate(9_311_303_552)
    fake_hub.add_repo(
        E2B_REPO,
        {
            MODEL_FILE: TINY / "tiny-gemma-4-E2B.gguf",
            "gemma-4-E2B-it-Q4_0.gguf": TINY / "tiny-gemma-4-E2B.gguf",
            "gemma-4-E2B-it-Q8_0.gguf": big_q8,
            MMPROJ_FILE: TINY / "mmproj-tiny-gemma-4-E2B.gguf",
            "README.md": b"# Gemma 4 E2B GGUF\n",
        },
    )
    return fake_hub


def file_gets(hub):
    return [r for r in hub.requests_for(method="GET") if r.file and r.file.endswith(".gguf")]


def test_dry_run_plans_e2b_with_memory_lines_and_downloads_nothing(hub):
    result = edge_gemma("setup", "--device", "pi5", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Plan for pi5-8gb: e2b Q4_K_M" in result.stdout
    assert f"{E2B_REPO}/{MODEL_FILE}" in result.stdout and MMPROJ_FILE in result.stdout
    for line in ("KV cache", "total", "budget", "left over"):
        assert line in result.stdout
    assert "not a pi5" in result.stderr and "skipped" in result.stderr  # unsloth/bartowski 404 here
    assert file_gets(hub) == []


def test_plan_json_is_machine_readable(hub):
    result = edge_gemma("plan", "--device", "pi5-4gb", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["model"] == "e2b" and plan["profile"] == "pi5-4gb"
    assert plan["total_bytes"] <= plan["budget_bytes"]
    assert {f["role"] for f in plan["files"]} == {"model", "mmproj"}


def test_setup_downloads_verifies_writes_config_and_run_uses_it(hub, isolated_user_dirs):
    result = edge_gemma("setup", "--device", "pi5", "--yes")
    assert result.returncode == 0, result.stderr
    assert "Saved: pi5-8gb" in result.stdout
    config = json.loads((isolated_user_dirs / "edge-gemma" / "config" / "device.json").read_text())
    assert config["model"]["filename"] == MODEL_FILE and len(config["model"]["revision"]) == 40
    assert config["model"]["sha256"] == hub.repos[E2B_REPO].files[MODEL_FILE].sha256
    assert config["mmproj"]["filename"] == MMPROJ_FILE
    assert os.path.getsize(config["model"]["path"]) == (TINY / "tiny-gemma-4-E2B.gguf").stat().st_size

    run = edge_gemma("run", "-n", "4", "Hello")  # no flags: the installed model and its profile
    assert run.returncode == 0, run.stderr
    assert "generated" in run.stderr

    listed = edge_gemma("models", "--json")
    names = {entry["name"]: entry for entry in json.loads(listed.stdout)}
    assert names[MODEL_FILE]["in_use"] and names[MMPROJ_FILE]["kind"] == "hub"


def test_second_setup_downloads_nothing_and_changes_nothing(hub):
    assert edge_gemma("setup", "--device", "pi5", "--yes").returncode == 0
    served = len(file_gets(hub))
    again = edge_gemma("setup", "--device", "pi5", "--yes")
    assert again.returncode == 0, again.stderr
    assert "Unchanged: pi5-8gb" in again.stdout
    assert len(file_gets(hub)) == served


def test_setup_on_this_machine_runs_the_smoke_test(hub):
    result = edge_gemma("setup", "--yes")  # auto: this machine maps to the generic profile
    assert result.returncode == 0, result.stderr
    assert "Smoke test passed" in result.stdout and "tok/s" in result.stdout
    assert "Short bench: pp128" in result.stdout and "tg32" in result.stdout


def test_interrupted_transfer_resumes_and_verifies(hub):
    hub.drop_after(25_000_000, file=MODEL_FILE, times=1)
    result = edge_gemma("setup", "--device", "pi5", "--yes")
    assert result.returncode == 0, result.stderr
    starts = [int(r.range[6:].split("-")[0]) for r in hub.requests_for(MODEL_FILE, method="GET") if r.range]
    assert starts and starts[-1] > 0  # the retry asked only for the rest of the file
    size = (TINY / "tiny-gemma-4-E2B.gguf").stat().st_size
    assert hub.bytes_served(MODEL_FILE) < 25_000_000 + size  # not everything twice


def test_corrupted_transfer_leaves_no_file_at_the_final_path(hub, isolated_user_dirs):
    hub.corrupt(file=MODEL_FILE)
    result = edge_gemma("setup", "--device", "pi5", "--yes")
    assert_one_line_error(result, "sha256")
    hub_dir = isolated_user_dirs / "hf" / "hub"
    assert not list(hub_dir.rglob(MODEL_FILE)), "a corrupt file was left where the good one belongs"
    assert not (isolated_user_dirs / "edge-gemma" / "config" / "device.json").exists()


@pytest.mark.parametrize(
    "kind, says",
    [("unauthorized", "hf auth login"), ("gated", "gated"), ("repo_not_found", "not found"), ("server_error", "500")],
)
def test_hub_errors_are_one_clear_line(hub, kind, says):
    hub.fail(kind)
    assert_one_line_error(edge_gemma("setup", "--device", "pi5", "--dry-run"), says)


def test_forced_quant_that_cannot_fit_is_refused_with_numbers(hub):
    result = edge_gemma("plan", "--device", "pi5-4gb", "--quant", "Q8_0")
    assert_one_line_error(result, "GB")
    assert "Q8_0" in result.stderr


def test_without_a_hub_the_plan_comes_from_the_catalog_marked_as_estimates(monkeypatch):
    """On a train: nothing listens at HF_ENDPOINT. `plan` still answers; `setup` says why it cannot."""
    from cli_helpers import free_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    for device in ("pi5-4gb", "pi5-8gb"):
        result = edge_gemma("plan", "--device", device)
        assert result.returncode == 0, result.stderr
        assert f"Plan for {device}: e2b" in result.stdout and "left over" in result.stdout
        assert "Cannot reach the hub" in result.stderr and "estimates" in result.stderr
        files = result.stdout.split("Files")[1].split("Memory")[0].strip().splitlines()
        assert len(files) == 2 and all(line.endswith("]") for line in files)  # both sizes marked as not listed
    plan = json.loads(edge_gemma("plan", "--device", "pi5-4gb", "--json").stdout)
    assert plan["total_bytes"] <= plan["budget_bytes"]
    assert_one_line_error(edge_gemma("setup", "--device", "pi5-4gb", "--yes"), "Cannot reach the hub")


def test_offline_mode_plans_from_the_catalog_too(hub, monkeypatch):
    """HF_HUB_OFFLINE=1 is exactly when a user wants the estimate, as with no network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = edge_gemma("plan", "--device", "pi5")
    assert result.returncode == 0, result.stderr
    assert "Plan for pi5-8gb: e2b" in result.stdout and "offline mode is on" in result.stderr
    assert "estimates" in result.stderr


def test_offline_with_nothing_set_up(hub):
    assert_one_line_error(edge_gemma("setup", "--offline"), "offline", "--gguf")


def test_local_import_of_a_non_gemma4_file_is_refused(demo_gguf):
    assert_one_line_error(edge_gemma("setup", "--gguf", str(demo_gguf)), "not Gemma 4")


def test_local_import_of_a_non_gguf_is_refused(tmp_path, isolated_user_dirs):
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"not a model" * 1000)
    assert_one_line_error(edge_gemma("setup", "--gguf", str(junk)), "not a GGUF file")
    assert not list((isolated_user_dirs / "edge-gemma").rglob("model.gguf"))


def test_local_import_works_offline(tmp_path):
    result = edge_gemma(
        "setup",
        "--gguf",
        str(TINY / "tiny-gemma-4-E2B.gguf"),
        "--mmproj",
        str(TINY / "mmproj-tiny-gemma-4-E2B.gguf"),
        "--no-smoke-test",
    )
    assert result.returncode == 0, result.stderr
    assert "Saved" in result.stdout and "mmproj-tiny-gemma-4-E2B.gguf" in result.stdout


def test_models_rm_refuses_the_configured_model_without_force(hub):
    assert edge_gemma("setup", "--device", "pi5", "--yes").returncode == 0
    assert_one_line_error(edge_gemma("models", "rm", MODEL_FILE), "--force")
    removed = edge_gemma("models", "rm", "--force", MODEL_FILE)
    assert removed.returncode == 0 and "freed" in removed.stdout
    assert MODEL_FILE not in edge_gemma("models").stdout


def test_unknown_quant_names_the_profile_quants(hub):
    assert_one_line_error(edge_gemma("plan", "--device", "pi5", "--quant", "Q9_9"), "Q9_9", "Q4_K_M")
