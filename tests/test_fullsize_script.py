"""scripts/make_fullsize_gemma4.py on its shrunken configuration: the real structure (sliding and
global layers, KV-shared layers with double-wide FFNs, the per-layer-embedding table, the real
tokenizer, audio+vision mmproj) at toy widths, quantized by llama.cpp, loaded by llama.cpp, checked.

The full-size files (3-5 GB each) are made and measured by scripts/fullsize_report.py, not in CI.
"""

import dataclasses
import importlib.util
import shutil
import sys

import pytest
from conftest import FIXTURES

from edge.model.engine import LoadedModel
from edge.settings import RunSettings


@pytest.fixture(scope="module")
def fullsize():
    spec = importlib.util.spec_from_file_location(
        "make_fullsize_gemma4", FIXTURES.parent.parent / "scripts" / "make_fullsize_gemma4.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(fullsize, tmp_path_factory):
    out = tmp_path_factory.mktemp("fullsize")
    assert fullsize.main(["--model", "test", "--out", str(out), "--quants", "Q4_0"]) == 0
    return out


def test_the_shrunken_build_has_every_file_with_the_configured_shapes(fullsize, built, capsys):
    names = fullsize.file_names(fullsize.SHAPES["test"])
    assert sorted(p.name for p in built.iterdir()) == sorted([names["Q4_0"], names["mmproj-F16"], names["mmproj-Q8_0"]])
    assert fullsize.check(fullsize.SHAPES["test"], built)
    report = capsys.readouterr().out
    assert report.count("shapes OK") == 3 and "WRONG" not in report


def test_check_names_the_tensors_whose_shape_differs(fullsize, built, tmp_path, capsys):
    for name in built.iterdir():
        if name.name.startswith("mmproj"):
            shutil.copy(name, tmp_path / name.name)
    shape = fullsize.SHAPES["test"]
    wider_audio = dataclasses.replace(
        shape, encoders=dataclasses.replace(shape.encoders, a_embd=shape.encoders.a_embd * 2)
    )
    assert not fullsize.check(wider_audio, tmp_path)
    assert capsys.readouterr().out.count("WRONG") == 2  # both mmproj files


def test_llama_cpp_loads_and_runs_the_quantized_file(fullsize, built):
    path = built / fullsize.file_names(fullsize.SHAPES["test"])["Q4_0"]
    with LoadedModel(path, RunSettings(n_ctx=512, n_batch=64, n_ubatch=64)) as loaded:
        report = loaded.engine.prefill("The capital of France is")
        assert len(loaded.engine.cached) == report.prompt_tokens == report.evaluated
        assert loaded.llama.n_embd() == fullsize.SHAPES["test"].n_embd


def test_a_new_section_lands_after_the_one_it_follows_and_old_ones_keep_their_place():
    from edge.bench.performance_doc import merge_sections

    previous = "# Page\n\n## A\nold a\n\n## D\nonly on the page\n\n## C\nold c\n"
    fresh = "# Page\n\n## A\nnew a\n\n## B\nnew b\n\n## C\nnew c\n"
    merged = merge_sections(previous, fresh)
    assert merged == "# Page\n\n## A\nnew a\n\n## B\nnew b\n\n## D\nonly on the page\n\n## C\nnew c\n"
