"""The package's layers: a lower package never imports a higher one, no module imports itself back
through others, code outside the engine uses only what the engine package exports, and only the
engine touches llama-cpp-python's private modules or its state."""

import ast
import re
from pathlib import Path

EDGE = Path(__file__).resolve().parents[1] / "edge"
# Lowest first; a unit is a top-level module or package, or a package inside one (model.engine).
# Units of one rank may import each other (their modules still may not form a cycle).
LAYERS = [
    {"errors", "paths", "jsonio", "audio_format", "network", "__init__"},
    {"device"},
    {"profiles"},
    {"settings", "tuned"},
    {"audio", "vision"},
    # engine/ sits on model's file-level modules (gguf, backend, chat_format); workers/ (RPC workers:
    # the layer split a load uses) on model's memory arithmetic and its RPC bindings.
    {"model", "model.engine", "workers"},
    {"setup"},
    {"launch", "assist"},
    {"bench", "voice", "media_question"},
    {"serve"},
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(EDGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in EDGE.rglob("*.py")}


def unit(module: str) -> str:
    """edge.model.engine.core -> model.engine; edge.model.gguf -> model; edge.launch -> launch."""
    parts = module.split(".")[1:] or ["__init__"]
    if len(parts) > 2 and (EDGE / parts[0] / parts[1]).is_dir():
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def imports(module: str) -> set[str]:
    """The edge modules `module` imports, at the top or inside functions (`from edge.x import y`
    counts as edge.x.y when that is a module, else edge.x)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edge":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "edge"}
    return found & set(MODULES)


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_has_a_layer_and_none_imports_one_above_it():
    assert {unit(m) for m in MODULES} <= set(RANK)
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if RANK[unit(target)] > RANK[unit(module)]
    ]
    assert upward == []


def test_no_module_imports_itself_back_through_others():
    cycles = _cycles(GRAPH)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in _cycles(graph)] == [["a", "b", "c"]]


def test_code_outside_the_engine_uses_only_what_the_engine_exports():
    reaching = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if not module.startswith("edge.model.engine")
        for target in targets
        if target.startswith("edge.model.engine.")
    ]
    assert reaching == []


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


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out
