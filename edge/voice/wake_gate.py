"""Which clips are for the assistant, when it has a wake word: what follows its name, and follow-ups.

The end-pointer keeps hearing everything (its noise floor and timing stay right); the gate decides
which closed clips become turns:
- a clip spoken in one breath with the name ("Hey Jarvis what time is it") is cut where the name
  was heard: the model hears only the request. Its name adds audio tokens to every turn, and a
  small model asked "Hey Jarvis. What time is it?" may answer the greeting instead of the question;
- a clip that starts within `listen_s` after the name is the request;
- after a reply, speech within `follow_up_s` of its end needs no name (a conversation goes on);
- anything else (a television, a phone call in the room) is dropped without a trace.
"""

from __future__ import annotations

import math
from dataclasses import replace

from edge.audio.vad import Clip

LISTEN_S = 8.0  # after the name: time to start the request
FOLLOW_UP_S = 6.0  # after a reply has been spoken: time to go on without the name
MIN_REQUEST_S = 0.3  # less speech than this after the name is the name alone (the request follows)
NAME_LEAD_S = 2.5  # the name itself was spoken up to this long before it was recognised


class WakeGate:
    def __init__(self, *, listen_s: float = LISTEN_S, follow_up_s: float = FOLLOW_UP_S):
        self.listen_s, self.follow_up_s = listen_s, follow_up_s
        self.awake_from = math.inf  # stream seconds: the window in which speech is for us
        self.awake_until = -math.inf
        self.heard_at: float | None = None  # when the name was last recognised (not yet used by a clip)

    def heard_name(self, now: float) -> None:
        if not self.awake(now):
            self.awake_from = now - NAME_LEAD_S
        self.awake_until = max(self.awake_until, now + self.listen_s)
        self.heard_at = now

    def keep_awake(self, now: float) -> None:
        """A reply is being made or spoken: the follow-up window runs from its end."""
        self.awake_from = min(self.awake_from, now)
        self.awake_until = max(self.awake_until, now + self.follow_up_s)

    def after_reply(self, now: float) -> None:
        """A reply is being spoken through a loudspeaker the microphone hears: speech starting now is
        our own, so the follow-up window opens only once the reply is over (the name still works)."""
        self.awake_from = max(self.awake_from, now) if self.awake(now) else now
        self.awake_until = max(self.awake_until, now + self.follow_up_s)

    def awake(self, now: float) -> bool:
        return self.awake_from <= now <= self.awake_until

    def admit(self, clip: Clip, *, preview: bool = False) -> Clip | None:
        """The clip as the model should hear it, or None when it was not meant for the assistant.
        `preview`: a snapshot of a clip still open (a speculative start): the name is not used up."""
        heard = self.heard_at
        if heard is not None and clip.start_s <= heard <= clip.end_s:
            if not preview:
                self.heard_at = None
            if clip.speech_end_s - heard < MIN_REQUEST_S:
                return None  # the name alone: the request comes in the next clip
            return after(clip, heard)
        if self.awake_from <= clip.speech_start_s <= self.awake_until:
            return clip
        return None


def after(clip: Clip, at: float) -> Clip:
    """The part of `clip` from stream time `at` on."""
    cut = max(0, int(round((at - clip.start_s) * clip.sample_rate)))
    return replace(clip, pcm=clip.pcm[cut:], start_s=at, speech_start_s=max(clip.speech_start_s, at))
