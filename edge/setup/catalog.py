"""Where the Gemma 4 E2B/E4B GGUF and mmproj files live, and how to pick one from a repo listing.

Data and small pure functions only: no network. The downloader lists a repo and passes the listing
in (anything with `.name` and `.size`); before that, setup plans with the sizes recorded here
(FACTS.md, as seen on the hub in 2026), or with an estimate from bits per weight when none is known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from edge.profiles import MODELS  # one list of the Gemma 4 edge models


class ListedFile(Protocol):
    name: str
    size: int | None


@dataclass(frozen=True)
class CatalogFile:
    name: str
    size: int | None  # bytes; None when not recorded


@dataclass(frozen=True)
class SizeGuess:
    bytes: int
    source: str  # "repo/file" it was recorded for, or how it was estimated
    estimated: bool


@dataclass(frozen=True)
class ResolvedFile:
    """A file the plan would use: where it is and how big, and how sure that size is."""

    repo: str
    name: str | None  # None: not recorded here; the downloader finds it in the repo listing
    size: int
    size_source: str  # "hub listing", "recorded", or how it was estimated
    precision: str = ""  # the quant (model) or precision (mmproj)

    @property
    def size_known(self) -> bool:
        return self.size_source in ("hub listing", "recorded")


@dataclass(frozen=True)
class ModelCard:
    key: str
    title: str
    repos: tuple[str, ...]  # in order of preference
    text_params: int  # parameters in the language-model GGUF (encoders live in the mmproj)
    n_layer: int
    n_embd: int
    n_embd_per_layer: int
    n_vocab: int
    n_head: int
    n_ff_max: int  # widest feed-forward (E2B's KV-sharing layers use a double-wide MLP)


# ggml-org first: llama.cpp's own conversions; then unsloth (UD quants, F16/BF16 projectors),
# then bartowski (wide quant range).
CARDS: dict[str, ModelCard] = {
    # text_params: the unsloth BF16 file is 9,311,303,552 bytes at 2 bytes per weight.
    "e2b": ModelCard(
        "e2b",
        "Gemma 4 E2B-it",
        ("ggml-org/gemma-4-E2B-it-GGUF", "unsloth/gemma-4-E2B-it-GGUF", "bartowski/google_gemma-4-E2B-it-GGUF"),
        4_655_000_000,
        35,
        1536,
        256,
        262144,
        8,
        12288,
    ),
    # text_params: Q4_0 is 30.5% of BF16 on E2B; E4B's Q4_0 is 4,590,807,392 bytes -> ~15.0 GB BF16.
    "e4b": ModelCard(
        "e4b",
        "Gemma 4 E4B-it",
        ("ggml-org/gemma-4-E4B-it-GGUF", "unsloth/gemma-4-E4B-it-GGUF", "bartowski/google_gemma-4-E4B-it-GGUF"),
        7_520_000_000,
        42,
        2560,
        256,
        262144,
        8,
        10240,
    ),
}

_F = CatalogFile
# Files seen on the hub (FACTS.md); size None where the listing had no size for us.
KNOWN_FILES: dict[str, tuple[CatalogFile, ...]] = {
    "ggml-org/gemma-4-E2B-it-GGUF": (
        _F("gemma-4-E2B-it-Q4_0.gguf", 2_841_481_184),
        _F("gemma-4-E2B-it-Q8_0.gguf", None),
        _F("gemma-4-E2B-it-BF16.gguf", None),
        _F("mmproj-gemma-4-E2B-it-Q8_0.gguf", 557_367_776),
    ),
    "unsloth/gemma-4-E2B-it-GGUF": (
        _F("gemma-4-E2B-it-Q4_K_M.gguf", None),
        _F("gemma-4-E2B-it-UD-Q4_K_XL.gguf", 3_184_494_720),
        _F("gemma-4-E2B-it-UD-IQ2_M.gguf", 2_290_858_112),
        _F("gemma-4-E2B-it-Q8_0.gguf", 5_048_350_848),
        _F("gemma-4-E2B-it-BF16.gguf", 9_311_303_552),
        _F("mmproj-F16.gguf", 985_654_080),
    ),
    "bartowski/google_gemma-4-E2B-it-GGUF": (
        _F("google_gemma-4-E2B-it-Q4_K_M.gguf", 3_462_678_272),
        _F("mmproj-google_gemma-4-E2B-it-f16.gguf", 985_653_760),
    ),
    "ggml-org/gemma-4-E4B-it-GGUF": (
        _F("gemma-4-E4B-it-Q4_K_M.gguf", 5_335_289_824),
        _F("gemma-4-E4B-it-Q4_0.gguf", 4_590_807_392),
        _F("mmproj-gemma-4-E4B-it-Q8_0.gguf", 559_874_528),
    ),
    "unsloth/gemma-4-E4B-it-GGUF": (_F("gemma-4-E4B-it-Q4_K_M.gguf", None), _F("mmproj-BF16.gguf", None)),
    "bartowski/google_gemma-4-E4B-it-GGUF": (_F("google_gemma-4-E4B-it-Q4_K_M.gguf", 5_405_168_384),),
}

# Bits per weight of a whole file (embeddings and norms included), for quants with no recorded size.
# Calibrated on the E2B files above: Q4_0 4.88, Q8_0 8.68, UD-Q4_K_XL 5.47, UD-IQ2_M 3.94,
# Q4_K_M 5.6-5.95; the rest are llama.cpp's nominal figures plus the same ~0.4 bit of overhead.
FILE_BITS_PER_WEIGHT: dict[str, float] = {
    "Q2_K": 3.4,
    "Q3_K_M": 4.3,
    "Q4_0": 4.9,
    "Q4_K_S": 5.0,
    "Q4_K_M": 5.95,
    "Q5_K_M": 6.1,
    "Q6_K": 7.0,
    "Q8_0": 8.7,
    "BF16": 16.0,
    "F16": 16.0,
    "IQ4_XS": 4.7,
    "UD-IQ2_M": 3.95,
    "UD-Q4_K_XL": 5.5,
    "UD-Q8_K_XL": 9.5,
}
# The projector at F16/BF16 is 1.768x its Q8_0 size (E2B: 985,654,080 / 557,367,776).
MMPROJ_F16_OVER_Q8 = 985_654_080 / 557_367_776
# Share of a main GGUF taken by the per-layer-embedding table (FACTS: E4B Q4_K_M ~1.94 GB of
# 4.96 GB, ~39% on E2B). Only for planning before the file exists; the real tensor size wins.
PLE_FILE_FRACTION = 0.39

_SPLIT = re.compile(r"-\d{5}-of-\d{5}$")


def _stem(name: str) -> str:
    base = PurePosixPath(name).name
    return base[:-5] if base.lower().endswith(".gguf") else base


def has_quant_token(name: str, quant: str) -> bool:
    """True when `quant` appears in the file name as a whole token (Q4_0 is not Q4_0_4_4, F16 not BF16).

    A plain quant (Q4_K_M) does not match an Unsloth dynamic one (UD-Q4_K_M): they are different files.
    """
    stem = _stem(name)
    pattern = r"(?:^|[-_.])" + re.escape(quant) + r"(?=$|[-.])"
    for match in re.finditer(pattern, stem, flags=re.IGNORECASE):
        before = stem[: match.start() + 1].upper()
        if not quant.upper().startswith("UD-") and before.endswith("UD-"):
            continue
        return True
    return False


def is_main_model_file(name: str) -> bool:
    """A .gguf that can be the language model: not a projector, imatrix, MTP head or split part."""
    base = PurePosixPath(name).name.lower()
    if not base.endswith(".gguf") or _SPLIT.search(_stem(name)):
        return False
    return "mmproj" not in base and "imatrix" not in base and not base.startswith("mtp-")


def find_model_file(files: Iterable[ListedFile], quant: str, model: str | None = None) -> ListedFile | None:
    """The main model file for `quant` in a repo listing, or None. Names drift between publishers,
    so match the quant token; prefer names that mention the model (E2B/E4B), then the shortest."""
    found = [f for f in files if is_main_model_file(f.name) and has_quant_token(f.name, quant)]
    if not found:
        return None
    tag = (model or "").lower()
    return min(found, key=lambda f: (tag not in PurePosixPath(f.name).name.lower(), len(f.name), f.name))


def is_mmproj_file(name: str) -> bool:
    base = PurePosixPath(name).name.lower()
    return base.endswith(".gguf") and "mmproj" in base


def find_mmproj_file(files: Iterable[ListedFile], precision: str) -> ListedFile | None:
    """The projector at `precision` (F16, BF16, Q8_0, F32) in a repo listing, or None."""
    found = [f for f in files if is_mmproj_file(f.name) and has_quant_token(f.name, precision)]
    return min(found, key=lambda f: (len(f.name), f.name)) if found else None


def mmproj_candidates(
    listings: Mapping[str, Sequence[ListedFile]], model: str, precisions: Sequence[str]
) -> list[tuple[str, str, ListedFile]]:
    """(precision, repo, file) in preference order: precision first (F16/BF16 keep audio quality),
    then the model's repo order."""
    out = []
    for precision in precisions:
        for repo in repo_order(model, listings):
            hit = find_mmproj_file(listings.get(repo, ()), precision)
            if hit is not None:
                out.append((precision, repo, hit))
    return out


def repo_order(model: str, listings: Mapping[str, Sequence[ListedFile]] | None = None) -> list[str]:
    """The catalog's repos for a model, then any other repo the caller listed."""
    repos = list(card(model).repos)
    return repos + [r for r in (listings or {}) if r not in repos]


def card(model: str) -> ModelCard:
    if model not in CARDS:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
    return CARDS[model]


def known_listings(model: str) -> dict[str, tuple[CatalogFile, ...]]:
    """The recorded listings of the model's repos (the planner's stand-in for the hub)."""
    return {repo: KNOWN_FILES[repo] for repo in card(model).repos if repo in KNOWN_FILES}


def estimate_model_size(model: str, quant: str) -> int:
    """Whole-file size from bits per weight; unknown quants count as 16-bit (never under-estimates)."""
    return int(card(model).text_params * FILE_BITS_PER_WEIGHT.get(quant, 16.0) / 8)


def fallback_model_size(model: str, quant: str) -> SizeGuess:
    """A recorded size for this quant (the largest across publishers: sizes differ), else an estimate."""
    sizes = [
        (f.size, f"{repo}/{f.name}")
        for repo, files in known_listings(model).items()
        if (f := find_model_file(files, quant, model)) is not None and f.size
    ]
    if sizes:
        size, source = max(sizes)
        return SizeGuess(size, f"as recorded for {source}", False)
    bits = FILE_BITS_PER_WEIGHT.get(quant, 16.0)
    return SizeGuess(estimate_model_size(model, quant), f"estimated at {bits} bits/weight", True)


def fallback_mmproj_size(model: str, precision: str) -> SizeGuess:
    """A recorded projector size at this precision, else one scaled from the Q8_0 size."""
    listings = known_listings(model)
    sizes = [
        (f.size, f"{repo}/{f.name}")
        for repo, files in listings.items()
        if (f := find_mmproj_file(files, precision)) is not None and f.size
    ]
    if sizes:
        size, source = max(sizes)
        return SizeGuess(size, f"as recorded for {source}", False)
    q8 = [f.size for files in listings.values() if (f := find_mmproj_file(files, "Q8_0")) and f.size]
    base = max(q8) if q8 else 560_000_000
    factor = {"Q8_0": 1.0, "F16": MMPROJ_F16_OVER_Q8, "BF16": MMPROJ_F16_OVER_Q8, "F32": 2 * MMPROJ_F16_OVER_Q8}.get(
        precision.upper(), MMPROJ_F16_OVER_Q8
    )
    return SizeGuess(int(base * factor), f"scaled from the Q8_0 projector ({factor:.2f}x)", True)


def estimate_ple_bytes(model_file_size: int) -> int:
    """The per-layer-embedding table's share of a main GGUF, before the file can be read."""
    return int(model_file_size * PLE_FILE_FRACTION)


def resolve_model_file(
    model: str, quant: str, listings: Mapping[str, Sequence[ListedFile]] | None = None
) -> ResolvedFile | None:
    """The first repo (in catalog order) holding `quant`, from real listings when given.

    With listings, None means no listed repo has the quant. Without, the recorded files are used and
    an unrecorded quant still gets a size estimate (the downloader finds the real file later).
    """
    source = listings if listings is not None else known_listings(model)
    hits = ((repo, find_model_file(source.get(repo, ()), quant, model)) for repo in repo_order(model, source))
    return _first_resolved(model, quant, hits, listings is not None, fallback_model_size)


def resolve_mmproj_file(
    model: str, precision: str, listings: Mapping[str, Sequence[ListedFile]] | None = None
) -> ResolvedFile | None:
    """The projector at `precision`, like resolve_model_file."""
    source = listings if listings is not None else known_listings(model)
    hits = ((repo, hit) for _, repo, hit in mmproj_candidates(source, model, [precision]))
    return _first_resolved(model, precision, hits, listings is not None, fallback_mmproj_size)


def _first_resolved(model: str, precision: str, hits, real: bool, guess_size) -> ResolvedFile | None:
    """The first (repo, file) hit with its size, recorded or guessed; for no hit, None from real
    listings, else a guess in the model's first repo."""
    for repo, hit in hits:
        if hit is None:
            continue
        if hit.size:
            return ResolvedFile(repo, hit.name, int(hit.size), "hub listing" if real else "recorded", precision)
        guess = guess_size(model, precision)
        return ResolvedFile(repo, hit.name, guess.bytes, guess.source, precision)
    if real:
        return None
    guess = guess_size(model, precision)
    return ResolvedFile(card(model).repos[0], None, guess.bytes, guess.source, precision)
