"""The floor plan holds: every import points down the layers of ``docs/ARCHITECTURE.md``, no module-level
cycle, and the commands people run first load no heavy dependency.

Layers, lowest first: ``genomes``; the root's ``evolve.config`` and ``evolve.seeding``; ``evolve.store``;
``evolve.training``; ``evolve.engine``; ``evolve.runner``; ``evolve.final``; ``evolve.views``;
``evolve.api``; ``evolve.cli``. A module imports from its own package or a lower one, at module level or
inside a function alike.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.config import build_config
from evolve.runner.launch import open_run, run_in_process

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["genomes", "evolve.config evolve.seeding", "evolve.store evolve.records", "evolve.training", "evolve.engine",
          "evolve.runner", "evolve.final", "evolve.views", "evolve.api", "evolve.cli", "evolve"]
HEAVY = ("torch", "ray", "pyarrow", "tensorboard", "pandas")


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix that names ``module``'s place."""
    best, found = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names.split():
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), index
    assert found >= 0, f"{module} is in no layer: add its package to LAYERS"
    return found


def module_files() -> dict[str, Path]:
    out = {}
    for top in ("evolve", "genomes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of evolve or genomes in ``path``;
    imports under ``if TYPE_CHECKING`` are left out (they never run)."""
    out: list[tuple[str, int, bool]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                out.extend((alias.name, node.lineno, top) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                out.extend((f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno, top)
                           for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner, top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()).body, True)
    return [(name, line, top) for name, line, top in out if name.split(".")[0] in ("evolve", "genomes")]


modules = module_files()


def test_every_import_points_down_the_layers():
    wrong = []
    for module, path in modules.items():
        for name, line, _ in imports(path, module):
            if layer(name) > layer(module):
                wrong.append(f"{module} (line {line}) imports {name}: "
                             f"{LAYERS[layer(name)]!r} is above {LAYERS[layer(module)]!r}")
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)


def test_no_module_level_import_cycle():
    graph = {m: {n if n in modules else n.rpartition(".")[0] for n, _, top in imports(p, m) if top} - {m}
             for m, p in modules.items()}
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt in graph and not state.get(nxt):
                walk(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            walk(module, [module])
    assert not cycles, "module-level import cycles:\n" + "\n".join(cycles)


def test_the_layer_test_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from evolve.cli.main import app\n")
    found = [(name, layer(name) > layer("evolve.store.bad")) for name, _, _ in imports(bad, "evolve.store.bad")]
    assert found == [("evolve.cli.main", True)]


@pytest.mark.parametrize("args", [["--help"], ["status", "{store}"], ["run", "--help"]])
def test_first_commands_load_neither_torch_nor_ray(tmp_path, args):
    """``evolve --help`` and ``evolve status`` answer at once: they must not pay for torch or Ray."""
    store = tmp_path / "store"
    run_in_process(*open_run(build_config({"store": str(store), "population": 2, "steps": 3,
                                           "fitness": "synthetic", "workers": 1})))
    probe = ("import sys\nfrom evolve.cli import app\nsys.argv = ['evolve'] + sys.argv[1:]\n"
             "try:\n    app()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
             f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
             "print('HEAVY', heavy)\nsys.exit(code or 0)")
    done = subprocess.run([sys.executable, "-c", probe, *[a.format(store=store) for a in args]],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, f"evolve {' '.join(args)} loaded {done.stdout.split('HEAVY')[-1].strip()}"


def test_no_module_over_600_lines():
    """A module holds one concept: past 600 lines it holds two (split it by job, as views/events.py was)."""
    long = {module: n for module, path in modules.items() if (n := len(path.read_text().splitlines())) > 600}
    assert not long, long
