"""The engine's record of what the KV cache holds, one key per context position.

A text position's key is its token id. An audio row's is a fingerprint of its embedding's bytes
(media.embedding_key), so rows heard while the user spoke are found again. A picture's positions
are keyed by its pixels' digest, and a picture is reused whole or evaluated again whole (libmtmd
decodes it in one go, and the model may attend across it both ways). MEDIA marks media nothing can
name: it never matches. All keys but token ids are negative, so none can equal a token.
"""

from __future__ import annotations

import hashlib

from edge.errors import AudioError
from edge.model.engine.media import EncodedAudio, MediaPiece, TextPiece

MEDIA = -1  # cached value under media decoded by libmtmd's helper: no token has it, so nothing matches it


def positions_of(piece: TextPiece | MediaPiece) -> int:
    """Context positions a piece takes."""
    return piece.n_pos if isinstance(piece, MediaPiece) else len(piece.tokens)


def cache_keys(piece: TextPiece | MediaPiece, encoded: EncodedAudio | None) -> list[int]:
    """What the cache will record for a piece: its tokens, its rows' fingerprints, a picture's keys
    (MEDIA where unknown)."""
    if isinstance(piece, TextPiece):
        return piece.tokens
    if encoded is None and piece.id:
        return picture_keys(piece.id, piece.n_pos)
    keys = encoded.keys[: piece.n_pos] if encoded is not None else []
    return keys + [MEDIA] * (piece.n_pos - len(keys))


def picture_keys(digest: str, n_pos: int) -> list[int]:
    """One key per position of a picture: negative (never a token id), distinct from audio rows' by
    construction (another input), and the same for the same pixels at the same budget."""
    return [
        -2 - int.from_bytes(hashlib.blake2b(f"{digest}:{n_pos}:{i}".encode(), digest_size=7).digest(), "little")
        for i in range(n_pos)
    ]


def outside_pictures(pieces: list, rows: list, keep: int) -> int:
    """`keep` moved back to the start of a picture it would cut (media decoded whole by libmtmd)."""
    position = 0
    for piece, encoded in zip(pieces, rows):
        size = positions_of(piece)
        if isinstance(piece, MediaPiece) and encoded is None and position < keep < position + size:
            return position
        position += size
    return keep


def through_last_media(pieces: list, rows: int) -> int:
    """Prompt positions up to and including `rows` rows of the last media piece."""
    position, last = 0, None
    for piece in pieces:
        if isinstance(piece, MediaPiece):
            last = (position, piece.n_pos)
        position += positions_of(piece)
    if last is None:
        raise AudioError("listening ahead needs a prompt with a clip")
    return last[0] + max(0, min(rows, last[1]))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y or x == MEDIA:
            break
        n += 1
    return n
