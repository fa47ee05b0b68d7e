"""`edge-gemma detect` and `devices`: each recorded board names the right board, RAM and profile."""

import json

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from edge.cli.app import cli

DEVICES = FIXTURES / "devices"


@pytest.mark.parametrize(
    "tree, board, ram, profile",
    [
        ("pi5-4gb", "Raspberry Pi 5", 4, "pi5-4gb"),
        ("pi5-16gb", "Raspberry Pi 5", 16, "pi5-16gb"),
        ("pi4", "Raspberry Pi 4", 4, "generic"),
        ("orin-nano-8gb", "Jetson Orin Nano 8GB", 8, "orin-nano-8gb"),
        ("orin-nx-16gb", "Jetson Orin NX 16GB", 16, "orin-nx-16gb"),
        ("x86-laptop", "x86-64 laptop", None, "x86-laptop-16gb"),
        ("x86-desktop", "x86-64 desktop", None, "generic"),
    ],
)
def test_detect_names_board_ram_and_profile(tree, board, ram, profile):
    result = CliRunner().invoke(cli, ["detect", "--json", "--root", str(DEVICES / tree)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["device"]["board"].startswith(board)
    assert payload["device"]["board_ram_gb"] == ram
    assert payload["profile"]["name"] == profile
    assert payload["reasons"]


def test_detect_text_explains_why():
    result = CliRunner().invoke(cli, ["detect", "--root", str(DEVICES / "pi5-4gb")])
    assert result.exit_code == 0
    assert "profile:   pi5-4gb" in result.output
    assert "why:" in result.output and "c04170" in result.output


def test_pi5_on_a_laptop_takes_the_8gb_variant_and_says_so():
    result = CliRunner().invoke(cli, ["detect", "--device", "pi5", "--root", str(DEVICES / "x86-laptop")])
    assert result.exit_code == 0
    assert "profile:   pi5-8gb" in result.output and "not a pi5" in result.output


def test_pi5_on_a_16gb_pi_takes_the_16gb_variant():
    result = CliRunner().invoke(cli, ["detect", "--device", "pi5", "--json", "--root", str(DEVICES / "pi5-16gb")])
    assert json.loads(result.output)["profile"]["name"] == "pi5-16gb"


def test_detect_this_machine_works():
    result = CliRunner().invoke(cli, ["detect", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["device"]["logical_cores"] >= 1


def test_unknown_device_is_one_line_with_the_valid_names():
    result = CliRunner().invoke(cli, ["detect", "--device", "raspberry"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown device 'raspberry'") and "pi5" in result.output


def test_devices_lists_every_profile_one_line_each():
    result = CliRunner().invoke(cli, ["devices"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("PROFILE")
    names = [line.split()[0] for line in lines[1:]]
    assert {"pi5-4gb", "pi5-8gb", "pi5-16gb", "orin-nano-8gb", "generic"} <= set(names)
    as_json = json.loads(CliRunner().invoke(cli, ["devices", "--json"]).output)
    assert len(as_json) == len(names)
