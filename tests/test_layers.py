"""The package's layers: a lower package never imports a higher one, and only the engine touches
llama-cpp-python's private modules or its state."""

import ast
import re
from pathlib import Path

EDGE = Path(__file__).resolve().parents[1] / "edge"
# Lowest first. Modules of one rank may import each other.
LAYERS = [
    {"errors", "paths", "jsonio", "audio_format", "__init__"},
    {"device"},
    {"profiles"},
    {"settings", "tuned"},
    {"model", "audio", "vision"},
    {"setup"},
    {"launch", "assist"},
    {"bench", "voice", "ask"},
    {"serve"},
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def top_level(path: Path) -> str:
    part = path.relative_to(EDGE).parts[0]
    return part.removesuffix(".py")


def edge_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names if a.name.startswith("edge."))


def test_no_package_imports_one_above_it():
    upward = [
        f"{path.relative_to(EDGE)} imports edge.{target}"
        for path in EDGE.rglob("*.py")
        for target in edge_imports(path)
        if RANK.get(target, -1) > RANK[top_level(path)]
    ]
    assert upward == []
    assert {top_level(p) for p in EDGE.rglob("*.py")} <= set(RANK)  # every package has a layer


def test_only_the_engine_touches_llama_cpp_private_modules_and_state():
    engine = EDGE / "model" / "engine"
    # llama-cpp-python's private modules, and the high-level Llama's own state and generate loops.
    private = re.compile(
        r"llama_cpp\._(?!_)|llama\.n_tokens\s*=|input_ids\[|llama\.(eval|generate)\(|create_completion"
    )
    offenders = [
        f"{path.relative_to(EDGE)}: {line.strip()}"
        for path in EDGE.rglob("*.py")
        if engine not in path.parents
        for line in path.read_text().splitlines()
        if private.search(line)
    ]
    assert offenders == []
