"""Audio devices through sounddevice (PortAudio): listing them and resolving a name or index.

sounddevice is imported lazily so the rest of edge-gemma works without it (it is the `voice` extra)
and so a missing PortAudio library becomes an AudioError with the fix, not an import-time crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge.errors import AudioError

Direction = Literal["input", "output"]


@dataclass(frozen=True)
class AudioDevice:
    """One PortAudio device as the user sees it in `--list-devices`."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool


def sounddevice() -> Any:
    """The sounddevice module, or an AudioError that says what to install."""
    try:
        import sounddevice as sd
    except ImportError as e:
        raise AudioError("audio capture and playback need sounddevice: pip install 'edge-gemma[voice]'") from e
    except OSError as e:  # sounddevice raises OSError when libportaudio is not on the system
        raise AudioError(
            f"PortAudio is not installed ({e}); install it (Debian/Raspberry Pi OS: "
            "sudo apt-get install libportaudio2; macOS: brew install portaudio)"
        ) from e
    return sd


def list_devices() -> list[AudioDevice]:
    sd = sounddevice()
    try:
        raw = sd.query_devices()
        apis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except Exception as e:  # PortAudioError: the host API itself failed
        raise AudioError(f"cannot list audio devices: {e}") from e
    return [
        AudioDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            host_api=str(apis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=int(d["index"]) == default_in,
            is_default_output=int(d["index"]) == default_out,
        )
        for d in raw
    ]


def list_input_devices() -> list[AudioDevice]:
    """Devices that can record, default first marked `is_default_input` (for `--list-devices`)."""
    return [d for d in list_devices() if d.max_input_channels > 0]


def list_output_devices() -> list[AudioDevice]:
    return [d for d in list_devices() if d.max_output_channels > 0]


def resolve_device(
    spec: int | str | None, direction: Direction, devices: list[AudioDevice] | None = None
) -> AudioDevice:
    """Pick a device by index, exact name, or unique case-insensitive name fragment; None = default.

    Every failure is an AudioError that lists the devices the user can choose from.
    """
    all_devices = list_devices() if devices is None else devices
    key = "max_input_channels" if direction == "input" else "max_output_channels"
    usable = [d for d in all_devices if getattr(d, key) > 0]
    if not usable:
        raise AudioError(
            f"no audio {direction} device found; connect a "
            f"{'microphone' if direction == 'input' else 'speaker'} (or start PulseAudio) and try again"
        )
    choices = "; ".join(f"{d.index}: {d.name}" for d in usable)
    if spec is None or (isinstance(spec, str) and spec.strip() == ""):
        flag = "is_default_input" if direction == "input" else "is_default_output"
        default = next((d for d in usable if getattr(d, flag)), None)
        if default is None:  # PortAudio reports no default: the first usable one will do
            return usable[0]
        return default
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        match = next((d for d in usable if d.index == index), None)
        if match is None:
            raise AudioError(f"no audio {direction} device with index {index}; choose one of: {choices}")
        return match
    wanted = spec.strip().lower()
    exact = [d for d in usable if d.name.lower() == wanted]
    if exact:
        return exact[0]
    partial = [d for d in usable if wanted in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise AudioError(f"no audio {direction} device named {spec!r}; choose one of: {choices}")
    names = "; ".join(f"{d.index}: {d.name}" for d in partial)
    raise AudioError(f"{spec!r} matches several {direction} devices ({names}); give the index or full name")


def pick_stream_format(sd: Any, device: AudioDevice, direction: Direction, rate: int) -> tuple[int, int]:
    """(sample_rate, channels) the device accepts: `rate` mono if it can, else its own rate/channels."""
    check = sd.check_input_settings if direction == "input" else sd.check_output_settings
    max_ch = device.max_input_channels if direction == "input" else device.max_output_channels
    native = int(round(device.default_samplerate)) or 48_000
    for sr in dict.fromkeys([rate, native, 48_000, 44_100]):
        for ch in dict.fromkeys([1, min(2, max_ch), max_ch]):
            try:
                check(device=device.index, samplerate=sr, channels=ch, dtype="float32")
                return sr, ch
            except Exception:  # PortAudio says no: try the next combination
                continue
    raise AudioError(
        f"audio device {device.index} ({device.name}) accepts none of the usual formats "
        f"(rates {rate}/{native}/48000/44100, 1-{max_ch} channels, float32); choose another device"
    )
