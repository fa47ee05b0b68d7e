"""Networks that are not the Hub: a captive portal, a hijacked API, a broken or hostile mirror.

The real huggingface_hub client talks to the hub look-alike on 127.0.0.1 (tests/fake_hub.py) in each
of its hostile modes; `edge-gemma setup` must end in one clear line, with nothing written.
"""

import os

import pytest
from cli_helpers import assert_one_line_error, edge_gemma
from conftest import FIXTURES

TINY = FIXTURES / "gemma4-tiny"
E2B_REPO = "ggml-org/gemma-4-E2B-it-GGUF"
MODEL_FILE = "gemma-4-E2B-it-Q4_K_M.gguf"


@pytest.fixture
def hub(fake_hub):
    fake_hub.add_repo(
        E2B_REPO,
        {
            MODEL_FILE: TINY / "tiny-gemma-4-E2B.gguf",
            "mmproj-gemma-4-E2B-it-F16.gguf": TINY / "mmproj-tiny-gemma-4-E2B.gguf",
        },
    )
    return fake_hub


def files_under(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and ".lock" not in p.name)


def assert_nothing_downloaded(hub, isolated_user_dirs):
    assert not [r for r in hub.requests_for(method="GET") if r.file and r.file.endswith(".gguf")]
    assert not [p for p in files_under(isolated_user_dirs) if p.suffix == ".gguf"]


def test_a_captive_portal_is_named_as_one(hub, isolated_user_dirs):
    hub.captive_portal = True
    result = edge_gemma("setup", "--device", "pi5-8gb", "--yes")
    assert_one_line_error(
        result, "answered", "with a web page, not the Hub: a captive portal or a proxy?", "Log in through a browser"
    )
    assert_nothing_downloaded(hub, isolated_user_dirs)


def test_an_api_redirected_to_another_host_is_refused(hub, isolated_user_dirs):
    hub.api_redirect_host = "127.0.0.2"  # another host on this machine, like a portal's login server
    result = edge_gemma("plan", "--device", "pi5-8gb")
    assert_one_line_error(result, "sent its API to another host (127.0.0.2)")
    assert_nothing_downloaded(hub, isolated_user_dirs)


@pytest.mark.parametrize(
    "sibling, what",
    [
        ({"rfilename": "../../../../../../etc/cron.d/gemma-4-E2B-it-Q4_K_M.gguf", "size": 10}, "a '..' path"),
        ({"rfilename": "/etc/gemma-4-E2B-it-Q4_K_M.gguf", "size": 10}, "an absolute path"),
        ({"rfilename": "gemma-4-E2B-it-Q4_K_M\x1b[2J.gguf", "size": 10}, "control characters"),
        (
            {
                "rfilename": "gemma-4-E2B-it-Q8_0.gguf",
                "size": 10**15,
                "lfs": {"size": 10**15, "sha256": "0" * 64, "pointerSize": 134},
            },
            "a size of 1,000,000,000,000,000 bytes",
        ),
        (
            {
                "rfilename": "gemma-4-E2B-it-Q5_K_M.gguf",
                "size": 10,
                "lfs": {"size": 10, "sha256": "not-a-hash", "pointerSize": 134},
            },
            "a malformed sha256",
        ),
    ],
)
def test_a_listing_that_makes_no_sense_is_refused_before_any_download(hub, isolated_user_dirs, sibling, what):
    hub.extra_siblings[E2B_REPO] = [sibling]
    result = edge_gemma("setup", "--device", "pi5-8gb", "--yes")
    assert_one_line_error(result, what, "broken or hostile", "HF_ENDPOINT")
    assert_nothing_downloaded(hub, isolated_user_dirs)
    assert not os.path.exists("/etc/cron.d/gemma-4-E2B-it-Q4_K_M.gguf")


def test_an_unexpected_exception_is_one_line_naming_a_bug(monkeypatch, tmp_path):
    """The last-resort guard: a bug (here: a broken profile loader) is not a traceback."""
    plugin = tmp_path / "sitecustomize.py"
    plugin.write_text(
        "import edge.profiles\n"
        "def broken(*a, **k):\n    raise KeyError('surprise')\n"
        "edge.profiles.load_profiles = broken\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = edge_gemma("devices")
    assert_one_line_error(
        result, "`edge-gemma devices` failed unexpectedly (KeyError: 'surprise')", "This is a bug", "EDGE_DEBUG=1"
    )
    monkeypatch.setenv("EDGE_DEBUG", "1")
    assert "Traceback" in edge_gemma("devices").stderr
