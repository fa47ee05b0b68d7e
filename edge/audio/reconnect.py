"""A microphone that survives being unplugged: wait for it to come back, then listen again.

A USB microphone is pulled, a Bluetooth headset drops, PulseAudio restarts: PortAudio ends the
stream. For a voice assistant on a shelf that is not the end of the session. ReconnectingMicrophone
says once that the input is gone, keeps trying to open it again (the same device, or the default if
that one is gone for good), and resumes; it gives up with an AudioError only after `wait_s`.
The conversation is not touched: what was said before the loss is still remembered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from edge.audio.capture import AudioSource, MicrophoneSource
from edge.errors import AudioError


class ReconnectingMicrophone(AudioSource):
    def __init__(
        self,
        mic: MicrophoneSource,
        *,
        wait_s: float | None = 600.0,
        poll_s: float = 1.0,
        on_event: Callable[[str], None] = lambda message: None,
    ):
        """`wait_s`: how long to wait for a lost device (None: forever, 0: not at all)."""
        super().__init__(mic.block_size)
        self.mic, self.wait_s, self.poll_s, self.on_event = mic, wait_s, poll_s, on_event
        self.reconnects = 0
        self._closed = False

    def open(self) -> None:
        self._closed = False
        self.mic.open()

    def close(self) -> None:
        self._closed = True
        self.mic.close()

    @property
    def ended(self) -> bool:
        return self._closed or (self.mic.ended and not self.mic.lost)

    @property
    def live(self) -> bool:
        return True

    @property
    def latency_s(self) -> float:
        return self.mic.latency_s

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        return self.mic.read(timeout)

    def drain(self) -> int:
        return self.mic.drain()

    def blocks(self, timeout: float | None = 0.5) -> Iterator[np.ndarray]:
        while True:
            yield from self.mic.blocks(timeout)
            if self._closed or not self.mic.lost:
                return
            self._wait_for_device()

    def _wait_for_device(self) -> None:
        name = self.mic.device.name if self.mic.device else "the microphone"
        if self.wait_s == 0:
            raise AudioError(
                f"the input device ({name}) went away; plug it back in and start again "
                "(or let voice wait for it: --device-wait SECONDS)"
            )
        self.on_event(f"the input device ({name}) is gone; waiting for it to come back (Ctrl-C quits)")
        started = time.monotonic()
        while not self._closed:
            if self.wait_s is not None and time.monotonic() - started > self.wait_s:
                raise AudioError(
                    f"the input device ({name}) did not come back within {self.wait_s:.0f} s; "
                    "check the cable or the audio server, then start voice again"
                )
            time.sleep(self.poll_s)
            if self._reopen():
                self.reconnects += 1
                self.on_event(f"input device back ({self.mic.device.name}); listening again")
                return

    def _reopen(self) -> bool:
        # PortAudio's device list is not refreshed (that would close the speaker's stream too): the
        # usual input, the audio server's "default"/"pulse" device, stays listed while its source
        # comes and goes; a raw ALSA device plugged in anew needs a restart of voice.
        self.mic.close()
        try:
            self.mic.open()
        except AudioError:
            spec, self.mic.device_spec = self.mic.device_spec, None  # the named one may be gone for good
            try:
                self.mic.open()
            except AudioError:
                self.mic.device_spec = spec
                return False
        return True
