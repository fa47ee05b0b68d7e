"""Profiles: every built-in one validates; bad files fail with file, key and allowed values."""

from types import SimpleNamespace

import pytest

from edge.errors import ProfileError
from edge.profiles import builtin_profiles_dir, choose_profile, device_ram_gb, load_profile_file, load_profiles

REQUIRED_NAMES = {
    "pi5-4gb",
    "pi5-8gb",
    "pi5-16gb",
    "orin-nano-8gb",
    "orin-nx-16gb",
    "agx-orin",
    "x86-laptop-8gb",
    "x86-laptop-16gb",
    "x86-laptop-32gb",
    "mac-apple-silicon",
    "generic",
}


def fake_device(kind="pi5", board_ram_gb=8, total_gib=7.8, arch="aarch64", jetson_module=None):
    return SimpleNamespace(
        kind=kind,
        board="test board",
        board_ram_gb=board_ram_gb,
        arch=arch,
        total_memory_bytes=int(total_gib * 2**30),
        jetson_module=jetson_module,
    )


def write_profile(tmp_path, name="custom", **changes):
    text = (builtin_profiles_dir() / "pi5-8gb.toml").read_text()
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        if key in changes:
            value = changes.pop(key)
            if value is None:
                continue
            line = f"{key} = {value}"
        lines.append(line)
    lines += [f"{k} = {v}" for k, v in changes.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_builtin_profiles_all_validate_and_cover_the_required_devices():
    profiles = load_profiles()
    assert REQUIRED_NAMES <= set(profiles)
    for profile in profiles.values():
        assert profile.model in ("e2b", "e4b")
        assert profile.n_ubatch <= profile.n_batch


def test_every_builtin_profile_explains_itself_in_comments():
    for path in builtin_profiles_dir().glob("*.toml"):
        comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert len(comments) >= 2, f"{path.name} needs comments saying why its values are what they are"


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"n_ctx": "12"}, "n_ctx = 12 is invalid; allowed: an integer from 256 to 131072"),
        ({"model": '"e8b"'}, "model = 'e8b' is invalid; allowed: one of e2b, e4b"),
        ({"load_mode": '"fast"'}, "allowed: one of mmap, mlock, mmap+mlock, none, direct-io"),
        ({"n_threads": '"4"'}, "n_threads = '4' is invalid"),
        ({"flash_attn": "1"}, "flash_attn = 1 is invalid; allowed: true or false"),
        ({"n_ctx": "true"}, "n_ctx = True is invalid"),
        ({"quants": "[]"}, "quants = [] is invalid"),
        ({"turbo": "true"}, "unknown key 'turbo'; allowed keys:"),
        ({"n_ctx": None}, "missing key 'n_ctx'"),
        ({"n_ubatch": "1024"}, "n_ubatch (1024) must not exceed n_batch (512)"),
        ({"type_v": '"q8_0"', "flash_attn": "false"}, "needs flash_attn = true"),
        ({"lazy_mode": '"on"', "load_mode": '"none"'}, "lazy_mode = 'on' needs load_mode mmap"),
        ({"echo_cancel": '"maybe"'}, "echo_cancel = 'maybe' is invalid; allowed: one of auto, on, off"),
    ],
)
def test_invalid_profiles_name_file_key_and_allowed_values(tmp_path, changes, expected):
    path = write_profile(tmp_path, **changes)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_a_shelf_speaker_profile_turns_the_echo_canceller_on_and_others_leave_it_to_auto(tmp_path):
    assert load_profile_file(write_profile(tmp_path, name="shelf", echo_cancel='"on"')).echo_cancel == "on"
    assert load_profile_file(write_profile(tmp_path, name="plain")).echo_cancel == "auto"


def test_malformed_toml_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("model = \n[[[")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(path)


def test_user_profiles_add_and_override(tmp_path):
    write_profile(tmp_path, name="pi5-8gb", n_ctx="1024")
    write_profile(tmp_path, name="my-board", family='"myboard"')
    profiles = load_profiles(tmp_path)
    assert profiles["pi5-8gb"].n_ctx == 1024
    assert profiles["pi5-8gb"].source == str(tmp_path / "pi5-8gb.toml")
    assert profiles["my-board"].family == "myboard"
    assert profiles["pi5-4gb"].n_ctx == 2048  # built-ins untouched


@pytest.mark.parametrize("ram, expected", [(4, "pi5-4gb"), (8, "pi5-8gb"), (16, "pi5-16gb"), (2, "pi5-4gb")])
def test_pi5_family_picks_the_variant_for_the_board_ram(ram, expected):
    choice = choose_profile("pi5", load_profiles(), fake_device(board_ram_gb=ram))
    assert choice.profile.name == expected
    assert choose_profile("auto", load_profiles(), fake_device(board_ram_gb=ram)).profile.name == expected


def test_pi5_on_another_machine_takes_the_8gb_variant_and_says_so():
    laptop = fake_device(kind="laptop", board_ram_gb=None, total_gib=31.2, arch="x86_64")
    choice = choose_profile("pi5", load_profiles(), laptop)
    assert choice.profile.name == "pi5-8gb"
    assert "not a pi5" in choice.reasons[0] and "8 GB" in choice.reasons[0]


def test_auto_maps_jetsons_laptops_and_unknowns():
    profiles = load_profiles()
    nano = fake_device(kind="jetson", board_ram_gb=8, jetson_module="orin-nano-8gb")
    assert choose_profile("auto", profiles, nano).profile.name == "orin-nano-8gb"
    laptop = fake_device(kind="laptop", board_ram_gb=None, total_gib=15.4, arch="x86_64")
    assert choose_profile("auto", profiles, laptop).profile.name == "x86-laptop-16gb"
    desktop = fake_device(kind="desktop", board_ram_gb=None, total_gib=23.5, arch="x86_64")
    assert choose_profile("auto", profiles, desktop).profile.name == "generic"


def test_unknown_device_lists_the_valid_ones():
    with pytest.raises(ProfileError) as err:
        choose_profile("pi6", load_profiles(), fake_device())
    message = str(err.value)
    assert "unknown device 'pi6'" in message and "pi5" in message and "orin-nano-8gb" in message


def test_ram_rounds_memtotal_up_to_the_size_sold():
    assert device_ram_gb(fake_device(board_ram_gb=None, total_gib=7.6)) == 8
    assert device_ram_gb(fake_device(board_ram_gb=None, total_gib=15.5)) == 16
    assert device_ram_gb(fake_device(board_ram_gb=4, total_gib=3.7)) == 4
