"""Architecture guards: package list, import layering, exported names, lazy imports."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]
# Layering: a package may import only itself and the ones listed for it.
ALLOWED = {
    "concilium.prompts": {"concilium"},
    "concilium.tools": {"concilium"},
    "concilium.agents": {"concilium", "concilium.prompts", "concilium.tools"},
    "concilium.graphs": {"concilium", "concilium.prompts", "concilium.tools", "concilium.agents"},
    "concilium.serving": {
        "concilium",
        "concilium.prompts",
        "concilium.tools",
        "concilium.agents",
        "concilium.graphs",
    },
    # the application layer: builds and binds workflows for every front-end
    "concilium.app": {
        "concilium",
        "concilium.prompts",
        "concilium.tools",
        "concilium.agents",
        "concilium.graphs",
        "concilium.serving",
    },
    "concilium.evals": {
        "concilium",
        "concilium.prompts",
        "concilium.tools",
        "concilium.agents",
        "concilium.graphs",
        "concilium.serving",
        "concilium.app",
    },
    "concilium.ui": {
        "concilium",
        "concilium.prompts",
        "concilium.tools",
        "concilium.agents",
        "concilium.graphs",
        "concilium.serving",
        "concilium.app",
        "concilium.evals",
        "concilium.examples",
    },
    # the top floor: commands over the application layer
    "concilium.cli": {
        "concilium",
        "concilium.prompts",
        "concilium.tools",
        "concilium.agents",
        "concilium.graphs",
        "concilium.serving",
        "concilium.app",
        "concilium.evals",
        "concilium.ui",
        "concilium.bench",
        "concilium.examples",
    },
}
PUBLIC_PACKAGES = ["concilium.app", "concilium.cli", "concilium.agents", "concilium.graphs", "concilium.graphs.patterns",
                   "concilium.tools", "concilium.prompts", "concilium.serving",
                   "concilium.evals", "concilium.ui"]  # fmt: skip


def _folder(package: str) -> Path:
    for prefix in sorted(PACKAGE_DIR, key=len, reverse=True):
        if package == prefix or package.startswith(prefix + "."):
            rest = package[len(prefix) :].strip(".")
            return (
                ROOT / PACKAGE_DIR[prefix] / Path(*rest.split("."))
                if rest
                else ROOT / PACKAGE_DIR[prefix]
            )
    raise AssertionError(f"{package} is not mapped in package-dir")


def test_every_package_on_disk_is_listed_in_pyproject() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = set()
    for prefix, folder in PACKAGE_DIR.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    assert on_disk == listed
    for package in listed:
        assert (_folder(package) / "__init__.py").exists()


_GROUND_HELPERS = ("concilium._errors", "concilium._json", "concilium._capped")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the package
                continue
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "concilium" or m.startswith("concilium.")}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_layering(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    for path in _folder(package).rglob("*.py"):
        for module in _imports(path):
            # "concilium" itself may be imported only for its errors and the bounded
            # readers of outside data every floor uses (JSON, capped file parsing)
            top = (
                "concilium"
                if module.startswith(_GROUND_HELPERS)
                else ".".join(module.split(".")[:2])
            )
            assert top in allowed or module.startswith(package), (
                f"{path.relative_to(ROOT)} imports {module}; {package} may import only {sorted(allowed)}"
            )


@pytest.mark.parametrize("package", [*PUBLIC_PACKAGES, "concilium"])
def test_exported_names(package: str) -> None:
    module = __import__(package, fromlist=["__all__"])
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicate names in __all__"
    for name in exported:
        assert getattr(module, name) is not None
    public = {n for n in dir(module) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    leaked = (
        public - exported - submodules - {"annotations", "TYPE_CHECKING", "Any", "import_module"}
    )
    assert not leaked, f"{package} exposes names missing from __all__: {sorted(leaked)}"


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_graphs_do_not_import_vllm_or_torch() -> None:
    heavy = _run("import sys, concilium.graphs, concilium.graphs.patterns; "
                 "print(sorted(m for m in ('vllm', 'torch', 'litellm') if m in sys.modules))")  # fmt: skip
    assert heavy == "[]"


def test_cli_help_imports_nothing_heavy() -> None:
    loaded = _run(
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from concilium.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0 and 'Usage' in r.output, r.output\n"
        "print(sorted(m for m in ('litellm', 'langgraph', 'pydantic', 'aiohttp', 'concilium.graphs') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_facade_is_lazy() -> None:
    loaded = _run(
        "import sys, concilium; print('concilium.agents' in sys.modules, 'langgraph' in sys.modules)"
    )
    assert loaded == "False False"


def test_python_started_in_the_checkout_imports_the_installed_package() -> None:
    """No top-level folder is named concilium: ``python`` in the checkout (the README
    quickstart pasted into a REPL there) finds the installed package, not a fragment."""
    assert not (ROOT / "concilium").exists()
    out = subprocess.run(
        [sys.executable, "-c", "from concilium import run, debate; import concilium.graphs; "
         "print(concilium.graphs.__name__)"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "concilium.graphs", out.stderr


def test_the_ground_floor_and_the_top_floor_are_different_folders() -> None:
    assert PACKAGE_DIR["concilium"] != PACKAGE_DIR["concilium.cli"]
    ground = {p.name for p in (ROOT / PACKAGE_DIR["concilium"]).glob("*.py")}
    assert ground <= {"__init__.py", "__main__.py", "_errors.py", "_json.py", "_capped.py"}, ground
    assert all(len(p.read_text().splitlines()) <= 300 for p in (ROOT / "cli").glob("*.py"))


def test_a_wheel_ships_the_defaults_it_reads(tmp_path: Path) -> None:
    """The UI's example list and the research commands' default workflow are package
    data: a wheel install has no checkout to read them from."""
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("concilium-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("concilium/examples/research_assistant.yaml", "concilium/examples/debate.yaml",
                    "concilium/examples/research_corpus/handbook.md",
                    "concilium/examples/data/capitals.jsonl", "concilium/app/_session.py",
                    "concilium/cli/_main.py", "concilium/_errors.py"):  # fmt: skip
        assert shipped in names, shipped
    assert not any(n.startswith(("agents/", "core/", "cli/")) for n in names)
