"""The echo's delay, remembered between sessions for each pair of audio devices.

A sound card's buffering puts the echo up to echo.MAX_LEAD_S behind what was played, and the same
devices give much the same delay from one session to the next. EchoDelay finds it only once a reply
has played a while (two agreeing estimates), and then the filter learns the room again: the first
reply's first 4 s or so are muted for the end-pointer. A session that starts at the delay the last
one agreed on has the echo in the filter's reach from its first frame. A memory that no longer holds
(other devices behind the same names) costs nothing over none: the delay is found again, as without.
"""

from __future__ import annotations

from edge.jsonio import read_json, write_json_atomic
from edge.paths import cache_dir

DELAY_FILE = "echo_delay.json"  # {"<input> -> <output>": samples at 16 kHz}


def device_key(input_device: int | str | None, output_device: int | str | None) -> str:
    """The devices as the user named them (the system's defaults when not)."""
    named = ["default" if device is None else str(device) for device in (input_device, output_device)]
    return " -> ".join(named)


def remembered_delay(key: str) -> int:
    """The delay the last session on these devices agreed on, in samples; 0 when none was kept."""
    delays = read_json(cache_dir() / DELAY_FILE)
    delay = delays.get(key) if isinstance(delays, dict) else None
    return delay if isinstance(delay, int) and delay >= 0 else 0


def remember_delay(key: str, samples: int) -> None:
    """Keep `samples` for these devices. Never raises: a cache that cannot be written is only a slower
    first reply next time (this runs on the microphone's reader thread)."""
    path = cache_dir() / DELAY_FILE
    try:
        delays = read_json(path)
        delays = delays if isinstance(delays, dict) else {}
        write_json_atomic(path, delays | {key: int(samples)})
    except (OSError, ValueError):
        pass
