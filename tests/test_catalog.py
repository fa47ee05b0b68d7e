"""Catalog: file-name matching across publishers, projector choice, fallback sizes."""

from dataclasses import dataclass

import pytest

from edge.setup import catalog
from edge.setup.catalog import (
    find_mmproj_file,
    find_model_file,
    has_quant_token,
    is_main_model_file,
    mmproj_candidates,
    resolve_mmproj_file,
    resolve_model_file,
)


@dataclass(frozen=True)
class Remote:  # the downloader's RemoteFile has the same name/size attributes
    name: str
    size: int | None = 1
    sha256: str | None = None


UNSLOTH_E2B = [
    Remote(n)
    for n in (
        "README.md",
        ".gitattributes",
        "gemma-4-E2B-it-Q4_K_M.gguf",
        "gemma-4-E2B-it-UD-Q4_K_XL.gguf",
        "gemma-4-E2B-it-UD-IQ2_M.gguf",
        "gemma-4-E2B-it-Q8_0.gguf",
        "gemma-4-E2B-it-BF16.gguf",
        "mmproj-F16.gguf",
        "mmproj-BF16.gguf",
        "imatrix_unsloth.gguf",
    )
]


@pytest.mark.parametrize(
    "name,quant,expected",
    [
        ("gemma-4-E2B-it-Q4_0.gguf", "Q4_0", True),
        ("gemma-4-e2b-it-q4_0.gguf", "Q4_0", True),  # case drifts between publishers
        ("google_gemma-4-E2B-it-Q4_K_M.gguf", "Q4_K_M", True),
        ("gemma-4-E2B-it-Q4_0_4_4.gguf", "Q4_0", False),
        ("gemma-4-E2B-it-Q4_K_M.gguf", "Q4_K", False),
        ("gemma-4-E2B-it-BF16.gguf", "F16", False),
        ("gemma-4-E2B-it-IQ2_M.gguf", "Q2_M", False),
        ("gemma-4-E2B-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL", True),
        ("gemma-4-E2B-it-UD-Q4_K_M.gguf", "Q4_K_M", False),  # a dynamic quant is a different file
        ("Q4_K_M/gemma-4-E2B-it-Q4_K_M.gguf", "Q4_K_M", True),
    ],
)
def test_quant_token_matching(name, quant, expected):
    assert has_quant_token(name, quant) is expected


@pytest.mark.parametrize(
    "name,expected",
    [
        ("gemma-4-E2B-it-Q4_0.gguf", True),
        ("mmproj-gemma-4-E2B-it-Q8_0.gguf", False),
        ("gemma-4-E2B-it-mmproj-f16.gguf", False),
        ("imatrix_unsloth.gguf", False),
        ("gemma-4-E2B-it-Q4_0.imatrix.gguf", False),
        ("mtp-gemma-4-E2B-it-Q4_0.gguf", False),
        ("gemma-4-E2B-it-Q4_0-00001-of-00002.gguf", False),
        ("README.md", False),
    ],
)
def test_what_can_be_the_main_model(name, expected):
    assert is_main_model_file(name) is expected


def test_find_model_file_never_picks_projector_imatrix_or_mtp():
    listing = [
        Remote("mmproj-gemma-4-E2B-it-Q8_0.gguf"),
        Remote("mtp-gemma-4-E2B-it-Q8_0.gguf"),
        Remote("imatrix-Q8_0.gguf"),
    ]
    assert find_model_file(listing, "Q8_0") is None
    listing.append(Remote("gemma-4-E2B-it-Q8_0.gguf"))
    assert find_model_file(listing, "Q8_0").name == "gemma-4-E2B-it-Q8_0.gguf"


def test_find_model_file_prefers_the_model_named_file():
    listing = [Remote("other-model-Q4_0.gguf"), Remote("gemma-4-E2B-it-Q4_0.gguf")]
    assert find_model_file(listing, "Q4_0", "e2b").name == "gemma-4-E2B-it-Q4_0.gguf"


def test_mmproj_by_precision():
    assert find_mmproj_file(UNSLOTH_E2B, "F16").name == "mmproj-F16.gguf"
    assert find_mmproj_file(UNSLOTH_E2B, "BF16").name == "mmproj-BF16.gguf"
    assert find_mmproj_file(UNSLOTH_E2B, "Q8_0") is None
    bartowski = [Remote("mmproj-google_gemma-4-E2B-it-f16.gguf")]
    assert find_mmproj_file(bartowski, "F16").name == "mmproj-google_gemma-4-E2B-it-f16.gguf"


def test_mmproj_candidates_put_precision_before_repo_order():
    listings = {
        "ggml-org/gemma-4-E2B-it-GGUF": [Remote("mmproj-gemma-4-E2B-it-Q8_0.gguf")],
        "unsloth/gemma-4-E2B-it-GGUF": UNSLOTH_E2B,
    }
    found = mmproj_candidates(listings, "e2b", ["F16", "BF16", "Q8_0"])
    assert [(p, r.split("/")[0]) for p, r, _ in found] == [
        ("F16", "unsloth"),
        ("BF16", "unsloth"),
        ("Q8_0", "ggml-org"),
    ]


def test_resolve_walks_repos_in_catalog_order_with_real_listings():
    listings = {
        "ggml-org/gemma-4-E2B-it-GGUF": [Remote("gemma-4-E2B-it-Q4_0.gguf", 2_841_481_184)],
        "unsloth/gemma-4-E2B-it-GGUF": [
            Remote("gemma-4-E2B-it-Q4_0.gguf", 3_000_000_000),
            Remote("gemma-4-E2B-it-Q4_K_M.gguf", 3_100_000_000),
        ],
    }
    q4_0 = resolve_model_file("e2b", "Q4_0", listings)
    assert (q4_0.repo, q4_0.size, q4_0.size_source) == ("ggml-org/gemma-4-E2B-it-GGUF", 2_841_481_184, "hub listing")
    assert resolve_model_file("e2b", "Q4_K_M", listings).repo == "unsloth/gemma-4-E2B-it-GGUF"
    assert resolve_model_file("e2b", "Q6_K", listings) is None
    assert resolve_mmproj_file("e2b", "F16", listings) is None


def test_fallback_sizes_come_from_facts_or_an_estimate():
    q4_0 = resolve_model_file("e2b", "Q4_0")
    assert q4_0.size == 2_841_481_184 and q4_0.size_known
    # Sizes differ across publishers: plan with the largest recorded one.
    assert catalog.fallback_model_size("e2b", "Q4_K_M").bytes == 3_462_678_272
    guess = resolve_model_file("e4b", "Q8_0")
    assert not guess.size_known and guess.name is None
    assert 7.5e9 < guess.size < 9e9  # ~8.7 bits x 7.5B weights
    assert resolve_mmproj_file("e2b", "Q8_0").size == 557_367_776
    e4b_f16 = catalog.fallback_mmproj_size("e4b", "F16")
    assert e4b_f16.estimated and 950e6 < e4b_f16.bytes < 1.05e9


def test_every_recorded_model_file_is_recognised():
    for model in catalog.MODELS:
        for _repo, files in catalog.known_listings(model).items():
            for f in files:
                if "mmproj" in f.name:
                    assert any(find_mmproj_file([f], p) for p in ("F16", "BF16", "Q8_0")), f.name
                else:
                    assert any(has_quant_token(f.name, q) for q in catalog.FILE_BITS_PER_WEIGHT), f.name


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="e2b, e4b"):
        catalog.card("e8b")
