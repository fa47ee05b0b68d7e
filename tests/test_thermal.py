"""Temperature and throttling readers on recorded /sys trees (tests/fixtures/thermal/...)."""

import pytest
from conftest import FIXTURES

from edge.bench.measure import _throttled_between
from edge.device.thermal import (
    ThermalReader,
    decode_throttled,
    parse_vcgencmd_temp,
    parse_vcgencmd_throttled,
    read_power_mode,
)

THERMAL = FIXTURES / "thermal"


@pytest.mark.parametrize(
    "bits, now, since",
    [
        (0x0, (), ()),
        (0x50005, ("under-voltage", "throttled"), ("under-voltage", "throttled")),
        (0x80008, ("soft temperature limit",), ("soft temperature limit",)),
        (0x20000, (), ("frequency capped",)),
        (
            0xF000F,
            ("under-voltage", "frequency capped", "throttled", "soft temperature limit"),
            ("under-voltage", "frequency capped", "throttled", "soft temperature limit"),
        ),
    ],
)
def test_throttled_bits_are_decoded(bits, now, since):
    assert decode_throttled(bits) == (now, since)


def test_vcgencmd_output_is_parsed():
    assert parse_vcgencmd_temp("temp=48.3'C\n") == 48.3
    assert parse_vcgencmd_throttled("throttled=0x50000\n") == 0x50000
    assert parse_vcgencmd_throttled("throttled=0\n") == 0
    assert parse_vcgencmd_temp("VCHI initialization failed") is None
    assert parse_vcgencmd_throttled("") is None


def test_hot_pi5_reads_zone_and_firmware_bits():
    sample = ThermalReader(THERMAL / "pi5-hot", board_kind="pi5").sample()
    assert sample.cpu_temp_c == 81.25
    assert sample.throttled_bits == 0x80008
    assert sample.conditions == ("soft temperature limit",)
    assert sample.since_boot == ("soft temperature limit",)
    assert sample.throttled
    assert "thermal zones" in sample.source and "firmware get_throttled" in sample.source


def test_cool_pi5_with_an_old_under_voltage_is_not_throttled_now():
    sample = ThermalReader(THERMAL / "pi5-cool", board_kind="pi5").sample()
    assert sample.cpu_temp_c == 48.3
    assert not sample.throttled
    assert sample.since_boot == ("under-voltage",)


def test_pi5_without_firmware_file_uses_the_80_c_soft_limit():
    sample = ThermalReader(THERMAL / "pi5-zone-only", board_kind="pi5").sample()
    assert sample.cpu_temp_c == 82.0 and sample.throttled_bits is None
    assert sample.conditions == ("at 80 C soft limit",)
    # The same temperature on a board without that firmware limit is just a temperature.
    assert not ThermalReader(THERMAL / "pi5-zone-only", board_kind="desktop").sample().throttled


def test_vcgencmd_wins_when_present(tmp_path):
    script = tmp_path / "vcgencmd"
    script.write_text(
        '#!/bin/sh\ncase "$1" in\n  measure_temp) echo "temp=79.9\'C";;\n'
        '  get_throttled) echo "throttled=0x20002";;\nesac\n'
    )
    script.chmod(0o755)
    sample = ThermalReader(THERMAL / "pi5-cool", board_kind="pi5", vcgencmd=str(script)).sample()
    assert sample.cpu_temp_c == 79.9  # vcgencmd over the thermal zone's 48.3
    assert sample.throttled_bits == 0x20002 and sample.conditions == ("frequency capped",)
    assert sample.source.startswith("vcgencmd")


def test_broken_vcgencmd_falls_back_to_sysfs(tmp_path):
    script = tmp_path / "vcgencmd"
    script.write_text("#!/bin/sh\necho 'VCHI initialization failed' >&2\nexit 255\n")
    script.chmod(0o755)
    sample = ThermalReader(THERMAL / "pi5-hot", board_kind="pi5", vcgencmd=str(script)).sample()
    assert sample.cpu_temp_c == 81.25 and sample.throttled_bits == 0x80008
    assert "vcgencmd" not in sample.source


def test_jetson_zones_passive_trip_and_power_mode():
    sample = ThermalReader(THERMAL / "jetson-orin", board_kind="jetson").sample()
    assert sample.cpu_temp_c == 96.5
    assert dict(sample.zones) == {"cpu-thermal": 96.5, "gpu-thermal": 61.0, "soc0-thermal": 58.5, "tj-thermal": 96.5}
    assert sample.conditions == ("cpu-thermal at passive trip 96 C",)  # tj-thermal's trip is 97 C
    assert sample.power_mode == "MAXN_SUPER"
    assert read_power_mode(THERMAL / "jetson-orin") == "MAXN_SUPER"


def test_x86_hwmon_sensor_when_there_is_no_zone():
    sample = ThermalReader(THERMAL / "x86-hwmon", board_kind="desktop").sample()
    assert sample.cpu_temp_c == 61.25  # k10temp, not the nvme sensor
    assert sample.source == "hwmon" and not sample.throttled


def test_container_without_sensors_degrades_quietly(tmp_path):
    for root in (THERMAL / "container", tmp_path):
        sample = ThermalReader(root).sample()
        assert sample.cpu_temp_c is None and sample.zones == () and not sample.throttled
        assert sample.power_mode is None and "no temperature source" in sample.source


def test_a_fixture_root_never_runs_the_real_vcgencmd():
    assert ThermalReader(THERMAL / "pi5-hot").vcgencmd is None


def test_repetition_is_marked_throttled_by_new_since_boot_bits():
    cool = ThermalReader(THERMAL / "pi5-cool", board_kind="pi5").sample()
    hot = ThermalReader(THERMAL / "pi5-hot", board_kind="pi5").sample()
    assert not _throttled_between(cool, cool)
    assert _throttled_between(cool, hot)  # throttled now, and a new since-boot bit
    assert not _throttled_between(None, None)
