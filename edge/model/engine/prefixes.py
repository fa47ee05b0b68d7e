"""Evaluated prompt prefixes kept beside the KV cache, restored in milliseconds instead of evaluated again.

A chat prompt starts with its system turn: the system prompt and, with tools, every declaration
(about 1,100 tokens for Home Assistant's intents; half a minute of prefill on a Pi 5). Requests that
take turns in the one KV cache (Wyoming's speech-to-text, then its conversation agent; serve's
clients) would evaluate it again each time, and a restarted process would at its first request.

The engine snapshots the KV state right after such a prefix (llama.cpp's sequence state API) and
keeps it here, in memory and in a folder, keyed by everything that shapes the state: the model and
projector files, the settings that lay out the cache, the llama.cpp build and the prefix's tokens. A
file is trusted only if every one of those matches and its checksums hold; anything else (damaged,
truncated, foreign, another build) is ignored with one note. Saving is atomic (a temporary file
renamed into place), so processes sharing the folder never read a half-written file, and a full disk
skips the save with a note.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"EDGEKV01"
MIN_PREFIX_TOKENS = 128  # a shorter prefix evaluates faster than it is worth keeping
# Snapshots kept in RAM (the most recently used): about 10 MB each for E2B's 1,100-token HA system turn.
MAX_IN_MEMORY = 2
# Files kept in the folder, the oldest removed first: a system prompt that changes every request
# (one that states the time) must not fill the disk.
MAX_ON_DISK = 8


@dataclass(frozen=True)
class PrefixSnapshot:
    keys: tuple[int, ...]  # the cache record of the prefix (engine/cache_record.py: token ids)
    state: bytes  # llama_state_seq_get_data of sequence 0 holding exactly those positions

    @property
    def digest(self) -> str:
        return keys_digest(self.keys)


def keys_digest(keys: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(keys, dtype="<i8").tobytes()).hexdigest()


class PrefixStore:
    """Snapshots for one loaded model and its settings (`identity`); `folder` None keeps them in memory."""

    def __init__(self, identity: dict, folder: Path | None, *, on_note: Callable[[str], None] = lambda m: None):
        self.identity = identity
        self.folder = folder
        self.on_note = on_note
        self._id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self._memory: OrderedDict[str, PrefixSnapshot] = OrderedDict()
        self._lock = threading.Lock()
        self._saving: list[threading.Thread] = []  # writes in flight: a stop waits for them
        self.restored = 0  # snapshots put back into the KV cache (for tests and logs)
        if folder is not None:
            self._load_folder()

    def best(self, wanted: Sequence[int]) -> PrefixSnapshot | None:
        """The longest snapshot whose keys begin `wanted`."""
        with self._lock:
            found = [s for s in self._memory.values() if len(s.keys) <= len(wanted) and _starts(wanted, s.keys)]
            if not found:
                return None
            best = max(found, key=lambda s: len(s.keys))
            self._memory.move_to_end(best.digest)
            return best

    def has(self, keys: Sequence[int]) -> bool:
        with self._lock:
            return keys_digest(keys) in self._memory

    def put(self, snapshot: PrefixSnapshot) -> None:
        """Keep it in memory, and write it to the folder in the background (the reply does not wait)."""
        with self._lock:
            self._remember(snapshot)
        if self.folder is not None:
            saving = threading.Thread(target=self._save, args=(snapshot,), name="edge-prefix-save", daemon=True)
            with self._lock:
                self._saving = [t for t in self._saving if t.is_alive()] + [saving]
            saving.start()

    def finish_saving(self) -> None:
        """Wait for the writes in flight (a server stopped right after its first request still keeps
        the state it evaluated). A write is a file of tens of MB: it ends on its own."""
        with self._lock:
            saving, self._saving = self._saving, []
        for thread in saving:
            thread.join()

    def _remember(self, snapshot: PrefixSnapshot) -> None:
        self._memory[snapshot.digest] = snapshot
        self._memory.move_to_end(snapshot.digest)
        while len(self._memory) > MAX_IN_MEMORY:
            self._memory.popitem(last=False)

    # -- the folder --------------------------------------------------------------------------------

    def path_for(self, snapshot: PrefixSnapshot) -> Path:
        return self.folder / f"{self._id}-{snapshot.digest[:16]}.kv"

    def _save(self, snapshot: PrefixSnapshot) -> None:
        path = self.path_for(snapshot)
        if path.exists():
            return
        keys = np.asarray(snapshot.keys, dtype="<i8").tobytes()
        header = json.dumps(
            {
                "identity": self.identity,
                "keys_sha256": hashlib.sha256(keys).hexdigest(),
                "state_sha256": hashlib.sha256(snapshot.state).hexdigest(),
                "n_keys": len(snapshot.keys),
                "state_bytes": len(snapshot.state),
            },
            sort_keys=True,
        ).encode()
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".saving-", suffix=".kv")
            with os.fdopen(fd, "wb") as out:
                out.write(MAGIC + struct.pack("<I", len(header)) + header + keys)
                out.write(snapshot.state)
            os.replace(tmp, path)
            self._prune()
        except OSError as exc:
            self.on_note(
                f"the evaluated prompt prefix was not saved ({exc.strerror or exc}); the next start evaluates it again"
            )
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.kv"), key=_mtime)
        for old in files[: max(0, len(files) - MAX_ON_DISK)]:
            try:
                old.unlink()
            except OSError:
                pass  # another process removed it first

    def _load_folder(self) -> None:
        for path in sorted(self.folder.glob(f"{self._id}-*.kv"), key=_mtime):
            snapshot, problem = read_snapshot(path, self.identity)
            if snapshot is not None:
                self._remember(snapshot)
            else:
                self.on_note(f"ignored the saved prompt state {path.name}: {problem}")


def read_snapshot(path: Path, identity: dict) -> tuple[PrefixSnapshot | None, str]:
    """A snapshot from `path` if every check holds, else (None, what was wrong)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        return None, "not an edge-gemma prompt state file"
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start : start + n])
        n_keys, n_state = int(header["n_keys"]), int(header["state_bytes"])
    except (ValueError, KeyError, TypeError):
        return None, "its header is damaged"
    if header.get("identity") != identity:
        return None, "it was saved for another model, projector, settings or llama.cpp build"
    keys_at = start + n
    state_at = keys_at + 8 * n_keys
    if len(data) != state_at + n_state:
        return None, "it is truncated or has extra bytes"
    keys, state = data[keys_at:state_at], data[state_at:]
    if hashlib.sha256(keys).hexdigest() != header.get("keys_sha256") or (
        hashlib.sha256(state).hexdigest() != header.get("state_sha256")
    ):
        return None, "its checksum does not match (damaged)"
    return PrefixSnapshot(tuple(int(k) for k in np.frombuffer(keys, dtype="<i8")), state), ""


def _starts(wanted: Sequence[int], keys: Sequence[int]) -> bool:
    return all(a == b for a, b in zip(wanted, keys))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class PrefixKeeping:
    """The engine's side of kept prefixes: put one back, and keep one while a prompt is evaluated.
    A mixin of Engine (core.py): it uses the engine's context, cache record and `prefixes` store."""

    def _restored(self, wanted: list[int], keep: int) -> int:
        """Put back a kept prefix state longer than what the cache shares with `wanted`; the positions
        now shared."""
        snapshot = self.prefixes.best(wanted) if self.prefixes is not None else None
        if snapshot is None or len(snapshot.keys) <= keep:
            return keep
        lc = self._lc
        lc.llama_memory_seq_rm(self._memory, 0, -1, -1)
        state = (ctypes.c_uint8 * len(snapshot.state)).from_buffer_copy(snapshot.state)
        if lc.llama_state_seq_set_data(self._ctx, state, len(snapshot.state), 0) != len(snapshot.state):
            self.prefixes.on_note("llama.cpp refused a saved prompt state; evaluating the prompt instead")
            self.reset()
            return 0
        self.cached = list(snapshot.keys)
        self.prefixes.restored += 1
        return len(snapshot.keys)

    def _pin(self, prefix: str, bos: bool, wanted: list[int], keep: int, end: int) -> int:
        """Where to stop and keep the state: the end of `prefix` in positions, or 0 (no store, too
        short, already kept, or not ahead of what is cached)."""
        if self.prefixes is None:
            return 0
        tokens = self.tokenize(prefix, bos=bos)
        pin = len(tokens)
        if not (MIN_PREFIX_TOKENS <= pin and keep < pin < end) or wanted[:pin] != tokens:
            return 0
        return 0 if self.prefixes.has(wanted[:pin]) else pin

    def _snapshot(self, n_positions: int) -> None:
        """The state of the cache, which holds exactly `n_positions`, into the prefix store."""
        lc = self._lc
        size = lc.llama_state_seq_get_size(self._ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = lc.llama_state_seq_get_data(self._ctx, buf, size, 0)
        if written:
            self.prefixes.put(PrefixSnapshot(tuple(self.cached[:n_positions]), bytes(buf)[:written]))
