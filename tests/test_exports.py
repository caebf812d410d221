"""The public surface, pinned: each package's ``__all__`` (and each namespace's)
written out here, so a name that leaks in or goes missing fails a test (as httpx's
test_exported_members does); the total stays at most 150 names; and no module
imports another package's private modules.

Updating a list: when a test fails it prints the package's ``__all__`` ready to
paste (``python -P tests/test_exports.py`` prints every list); a name added on
purpose goes into the list in the same commit.
"""

from __future__ import annotations

import ast
import importlib
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]

# Each public package's __all__, in order (the grouping of the __init__), one
# string of names per package.
EXPECTED_ALL = {
    "concilium.app": """
        load Override parse_override Backend Session Listener
    """,
    "concilium.cli": """
        main
    """,
    "concilium": """
        ConciliumError UserError WorkflowError GraphError ModelError ModelCallError
        OutputParseError RunError BudgetExceeded Agent ModelSpec run debate SimServer SimConfig
    """,
    "concilium.agents": """
        Agent AgentReply run_with_tools AnswerConfidence ModelSpec Capabilities Endpoints
        aclose Budget Sampling ledger Message Usage TokenLogprob Completion Choice wire task_group
        configure_tracing workflow_span eval_span item_span redact private_file FakeModel sim
    """,
    "concilium.bench": """

    """,
    "concilium.graphs": """
        Graph Branch START END reducers run run_sync stream RunResult Event partial_result
        StateStore RunContext current_run as_agent run_dag DagNode Executor TaskRun kit
    """,
    "concilium.graphs.patterns": """
        debate round_table chateval cross_review leap mixture_of_agents self_consistency
        adaptive_consistency semantic_entropy confidence_consistency deepconf_online agent_forest best_of_n
        knockout universal_self_consistency synthesis skeleton_of_thought tree_of_thoughts
        graph_of_thoughts Operation manager_worker chain_of_agents division_of_thoughts
        plan_and_execute react overlapped_tools search_decomposition research parse_calls
        run_call yes_probability resolve_citations describe_location
    """,
    "concilium.graphs.workflows": """
        Workflow load_workflow parse_workflow validate_workflow build_workflow WorkflowSpec
        load_yaml read_workflow_text
    """,
    "concilium.prompts": """
        PromptLibrary
    """,
    "concilium.serving": """
        SimServer serve_forever create_app check_bind create_mcp_server mcp_http_app
        ManagedProcess engine cluster
    """,
    "concilium.tools": """
        Tool ToolRegistry ToolError ToolText builtin_tools McpServer mcp_tools plans
        evidence arithmetic_answer
    """,
    "concilium.evals": """
        EvalRecord load_records scorer_from_name default_scorer build_methods parse_setting
        evaluate evaluate_on_ray ItemResult summarise MethodSummary render_table
        write_summary replay_deepconf render_replay tasks
    """,
    "concilium.examples": """
        FOLDER
    """,
    "concilium.ui": """
        add_ui RunHistory EventLog render_eval_report
    """,
}


# Namespaces: a public module that a package lists in its ``__all__`` (``from
# concilium.tools import plans``) groups one sub-API; it is pinned the same way, and
# counts as one name of its package.
EXPECTED_NAMESPACES = {
    "concilium.agents.ledger": """
        CallLedger current_ledger use_ledger reset_ledger CallRecord SqliteCallRecord supervise
    """,
    "concilium.agents.wire": """
        chat_completion text_completion chat_choice text_choice chunk delta_choice usage
        token_logprob tool_call error model_card model_list sse SSE_DONE message_text JsonObject
        UsageBody LogprobsBody ToolCallBody ErrorBody
    """,
    "concilium.agents.sim": """
        SimConfig Rule Statistical TokenConfidence Latency Faults
    """,
    "concilium.evals.tasks": """
        task_names describe_task make_task
    """,
    "concilium.graphs.kit": """
        Respondent ask use_tool turn Turn PatternOptions solve_messages user prompt_library
        conversation history with_system
        distinct_names AnswerFormat majority_vote report_vote sample_turns normalize_number
        trace_confidences DEEPCONF_WINDOW DEEPCONF_TOP_K WindowConfidence deepconf_threshold
        PatternSpec AgentSlot AnswerSpec register_pattern Builder
    """,
    "concilium.graphs.reducers": """
        append merge add
    """,
    "concilium.serving.cluster": """
        ClusterSpec load_cluster_spec launch_cluster Router router_binary run_router
        ROUTED_REPLICA_ARGS read_metrics
    """,
    "concilium.serving.engine": """
        install_engine EngineHome engine_pins local_engine LocalEngine ENGINE_MODEL
    """,
    "concilium.tools.evidence": """
        EvidenceStore Passage default_index_path Embedder openai_embedder write_corpus
        CorpusQuestion
    """,
    "concilium.tools.plans": """
        PlanParser parse_plan parse_json_plan parse_arguments Task resolve PlanError
        END_OF_PLAN
    """,
}
PINNED = {**EXPECTED_ALL, **EXPECTED_NAMESPACES}


def _private(package: str) -> bool:
    return any(part.startswith("_") for part in package.split("."))


def test_every_public_package_is_pinned() -> None:
    public = sorted(p for p in PACKAGES if not _private(p))
    assert sorted(EXPECTED_ALL) == public


def _paste(package: str, names: list[str]) -> str:
    body = textwrap.fill(" ".join(names), 92, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return f'    "{package}": """\n{body}\n    """,'


def _namespaces() -> list[str]:
    """The public modules the pinned packages export by name (a module without an
    ``__all__`` is not one)."""
    found = []
    for package in EXPECTED_ALL:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, ModuleType) and hasattr(value, "__all__"):
                found.append(value.__name__)
    return sorted(found)


def test_every_namespace_is_pinned() -> None:
    assert _namespaces() == sorted(EXPECTED_NAMESPACES)


@pytest.mark.parametrize("package", sorted(PINNED))
def test_all_is_exactly_the_pinned_list(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    expected = PINNED[package].split()
    assert len(set(names)) == len(names), f"duplicate names in {package}.__all__"
    missing, leaked = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
    assert not missing and not leaked, (
        f"{package}.__all__ differs from the pinned list: missing {missing}, new {leaked}.\n"
        f"If that is intended, update EXPECTED_ALL in {Path(__file__).name}:\n"
        + _paste(package, names)
    )
    assert names == expected, "same names, new order: update EXPECTED_ALL\n" + _paste(
        package, names
    )


@pytest.mark.parametrize("package", sorted(PINNED))
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    unresolved = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not unresolved, f"{package}.__all__ names what it does not define: {unresolved}"
    for name in module.__all__:
        value = getattr(module, name)
        home = getattr(value, "__module__", None)
        # a re-exported class or function comes from concilium (or names its origin)
        if isinstance(value, type) or callable(value):
            assert home is not None, f"{package}.{name} has no __module__"


# The whole public surface, counted from the modules (not from the lists above): every
# public package's ``__all__``, the facade's included; a namespace counts as one name.
# It was 358 names, a third of them used only by their own package's tests. A name
# stays public when a user (README, docs, examples), a pattern or another package
# imports it; otherwise it lives in its private module.
MAX_PUBLIC_NAMES = 150


def test_the_public_surface_stays_small() -> None:
    counts = {
        package: len(importlib.import_module(package).__all__)
        for package in PACKAGES
        if not _private(package)
    }
    total = sum(counts.values())
    assert total <= MAX_PUBLIC_NAMES, (
        f"{total} public names, over {MAX_PUBLIC_NAMES}: {counts}. Export a name only when "
        "another package, a pattern or a user (README, docs, examples) imports it."
    )


def test_each_name_is_exported_once() -> None:
    """No class or function has two public names, except that the facade (``from
    concilium import run, debate``, the README's first lines) re-exports a few names
    of one package or namespace each."""
    homes: dict[int, list[tuple[str, str]]] = {}
    for package in PINNED:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) or (callable(value) and not isinstance(value, ModuleType)):
                homes.setdefault(id(value), []).append((package, name))
    twice = [places for places in homes.values() if len(places) > 1]
    not_facade = [p for p in twice if len(p) > 2 or sum(pkg == "concilium" for pkg, _ in p) != 1]
    assert not not_facade, f"exported under more than one name: {not_facade}"


# ------------------------------------------------------------ private imports

# Folders whose files are checked, and the package each test folder tests (a
# test may use the private names of the package it tests, nothing else).
TEST_PACKAGES = {
    "tests/agents": "concilium.agents",
    "tests/graphs": "concilium.graphs",
    "tests/graphs/patterns": "concilium.graphs.patterns",
    "tests/tools": "concilium.tools",
    "tests/prompts": "concilium.prompts",
    "tests/serving": "concilium.serving",
    "tests/engine": "concilium.serving",
    "tests/app": "concilium.app",
    "tests/cli": "concilium.cli",
    "tests/evals": "concilium.evals",
    "tests/ui": "concilium.ui",
    "tests": "concilium",
}
# A subpackage may use its parent's private modules, except these, which must be
# written from the parent's public API the way a user would (STYLE.md, habit 2).
PUBLIC_ONLY = {("concilium.graphs.patterns", "concilium.graphs")}
# Known violations being fixed (issue 10), as "file imports module": a new one fails
# the test, and so does an entry here that is no longer a violation (delete it).
TO_FIX: set[str] = set()


def _module_name(path: Path) -> tuple[str, bool]:
    """The dotted module a source file is, and whether it is a package's __init__."""
    rel = path.relative_to(ROOT)
    for prefix, folder in sorted(PACKAGE_DIR.items(), key=lambda kv: len(kv[1]), reverse=True):
        if rel.parts[: len(Path(folder).parts)] == Path(folder).parts:
            rest = rel.with_suffix("").parts[len(Path(folder).parts) :]
            is_init = bool(rest) and rest[-1] == "__init__"
            parts = [prefix, *(rest[:-1] if is_init else rest)]
            return ".".join(parts), is_init
    raise AssertionError(f"{rel} is in no mapped folder")


def _importer_package(path: Path) -> str:
    """The package whose privacy a file shares."""
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("tests/"):
        folder = max((f for f in TEST_PACKAGES if rel.startswith(f + "/")), key=len)
        return TEST_PACKAGES[folder]
    module, is_init = _module_name(path)
    return module if is_init else module.rpartition(".")[0]


def _owner(module: str) -> str | None:
    """``concilium.serving._engine._x`` -> ``concilium.serving``; ``None`` if public."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _private_uses(path: Path) -> Iterator[tuple[int, str]]:
    """(line, private module or name) for each import of a concilium private."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path) if path.relative_to(ROOT).parts[0] != "tests" else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if here is None:
                    continue  # tests import no package relatively
                module, is_init = here
                anchor = module.split(".")
                anchor = anchor if is_init else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [
                f"{base}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
        else:
            continue
        for target in targets:
            if target.startswith("concilium.") and _owner(target) is not None:
                yield node.lineno, target


def _allowed(importer: str, owner: str) -> bool:
    if (importer, owner) in PUBLIC_ONLY or any(
        importer.startswith(sub + ".") and owner == parent for sub, parent in PUBLIC_ONLY
    ):
        return False
    return importer == owner or importer.startswith(owner + ".")


def _sources() -> list[Path]:
    folders = [*sorted(set(PACKAGE_DIR.values())), "tests"]
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def private_import_violations() -> list[str]:
    found = []
    for path in _sources():
        importer = _importer_package(path)
        for line, target in _private_uses(path):
            owner = _owner(target)
            assert owner is not None
            if not _allowed(importer, owner):
                rel = path.relative_to(ROOT)
                found.append(f"{rel}:{line} imports {target} (private to {owner})")
    return found


def _without_line(violation: str) -> str:
    where, _, rest = violation.partition(" imports ")
    return f"{where.rpartition(':')[0]} imports {rest.partition(' (')[0]}"


def test_no_package_imports_another_packages_private_modules() -> None:
    violations = private_import_violations()
    fixed = TO_FIX - {_without_line(v) for v in violations}
    assert not fixed, f"no longer violations, delete them from TO_FIX: {sorted(fixed)}"
    violations = [v for v in violations if _without_line(v) not in TO_FIX]
    assert not violations, (
        "import the public name from the package instead (export it in its __all__ "
        "if it is missing):\n" + "\n".join(violations)
    )


def test_the_private_import_check_sees_relative_and_absolute_imports(tmp_path: Path) -> None:
    """The checker itself: it resolves relative imports and private names."""
    assert _owner("concilium.serving._engine") == "concilium.serving"
    assert _owner("concilium.agents._transports._direct") == "concilium.agents"
    assert _owner("concilium.graphs") is None
    assert _allowed("concilium.agents", "concilium")  # concilium._errors
    assert _allowed("concilium.graphs.workflows", "concilium.graphs")
    assert not _allowed("concilium.graphs", "concilium.agents")
    assert not _allowed("concilium.graphs.patterns", "concilium.graphs")
    assert _allowed("concilium.graphs.patterns", "concilium.graphs.patterns")
    pattern = ROOT / "graphs" / "patterns" / "_debate.py"
    assert _module_name(pattern) == ("concilium.graphs.patterns._debate", False)
    assert _importer_package(pattern) == "concilium.graphs.patterns"
    assert _importer_package(ROOT / "graphs" / "__init__.py") == "concilium.graphs"


if __name__ == "__main__":  # print the current lists, to paste into EXPECTED_ALL
    for name in sorted(PINNED):
        print(_paste(name, list(importlib.import_module(name).__all__)))
