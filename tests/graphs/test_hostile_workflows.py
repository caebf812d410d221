"""Hostile workflow files: a generated corpus of bad files (and prompt templates), each refused by
``concilium validate`` with exit 2 and a message naming the file (and the line where
there is one), no traceback, bounded memory, no hang; and nested patterns whose
call keys grow linearly with the depth."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from concilium import UserError
from concilium.agents import Agent, FakeModel
from concilium.graphs import as_agent, run_sync
from concilium.graphs.patterns import self_consistency
from concilium.graphs.workflows import load_workflow

MAX_RSS_MB = 500
HEAD = """\
name: hostile
models:
  m: {model: hosted_vllm/x, api_base: "http://127.0.0.1:1/v1"}
agents:
  a: {model: m}
"""
TAIL = "workflow: {kind: self_consistency, agent: a, samples: 3}\n"


def _system(template: str) -> str:
    return HEAD.replace("a: {model: m}", f"a: {{model: m, system: {json.dumps(template)}}}") + TAIL


def _bomb() -> str:
    anchors = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(anchors) + "\n" + HEAD + TAIL


def _nested_patterns(depth: int) -> str:
    inner = "a"
    for _ in range(depth):
        inner = f"{{kind: self_consistency, samples: 1, agent: {inner}}}"
    return HEAD + f"workflow: {inner}\n"


def _deep_block(depth: int) -> str:
    return (
        HEAD + TAIL + "description:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(depth))
    )


@dataclass(frozen=True)
class Case:
    text: str | bytes | None  # None: made by ``make``
    has_line: bool = True
    make: Callable[[Path], None] | None = None


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _with_template(source: str) -> Callable[[Path], None]:
    """A workflow whose prompts_dir holds one template file with ``source``."""

    def make(path: Path) -> None:
        folder = path.parent / f"prompts_{path.stem}" / "debate"
        folder.mkdir(parents=True)
        (folder / "round.j2").write_text(source)
        path.write_text(HEAD + TAIL + f"prompts_dir: prompts_{path.stem}\n")

    return make


CORPUS: dict[str, Case] = {
    "alias_bomb": Case(_bomb()),
    "deep_flow_nesting": Case(HEAD + TAIL + "description: " + "[" * 1000 + "]" * 1000 + "\n"),
    "deep_block_nesting": Case(_deep_block(1000)),
    "recursive_alias": Case(HEAD + TAIL + "budget: &b {max_calls: *b}\n"),
    "merge_key": Case(
        HEAD.replace("a: {model: m}", "base: &d {model: m}\n  a:\n    <<: *d") + TAIL
    ),
    "complex_key": Case(HEAD + TAIL + "? [a, b]\n: 1\n"),
    "mapping_key": Case(HEAD + TAIL + "{x: 1}: 2\n"),
    "tagged_key": Case(HEAD + TAIL + "!!str description: x\n"),
    "python_tag": Case(HEAD + TAIL + "description: !!python/object/apply:os.system ['true']\n"),
    "custom_tag": Case(HEAD + TAIL + "description: !secret x\n"),
    "huge_integer": Case(HEAD + TAIL + "description: " + "9" * 5000 + "\n"),
    "jinja_repeat": Case(_system("{{ 'x' * 10**9 }}")),
    "jinja_nested_ranges": Case(
        _system("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    ),
    "jinja_nested_small_ranges": Case(
        _system("{% for i in range(10000) %}{% for j in range(10000) %}.{% endfor %}{% endfor %}")
    ),
    "jinja_power": Case(_system("{{ 99 ** 999999 }}")),
    "jinja_doubling": Case(
        _system(
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
        )
    ),
    "jinja_division_by_zero": Case(_system("{{ 1 / 0 }}")),
    "jinja_missing_include": Case(_system("{% include 'no/such.j2' %}")),
    "jinja_recursion": Case(_system("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")),
    "jinja_syntax": Case(_system("{% for %}")),
    "timeout_inf": Case(HEAD.replace('/v1"}', '/v1", timeout: .inf}') + TAIL),
    "timeout_nan": Case(HEAD.replace('/v1"}', '/v1", timeout: .nan}') + TAIL),
    "timeout_giant": Case(HEAD.replace('/v1"}', '/v1", timeout: 1.0e+300}') + TAIL),
    "simulate_latency_inf": Case(HEAD + TAIL + "simulate: {latency: {fixed: .inf}}\n"),
    "patterns_nested_30": Case(_nested_patterns(30)),
    "nul_byte": Case((HEAD + TAIL).encode().replace(b"hostile", b"host\0ile")),
    "latin1_bytes": Case((HEAD + TAIL).replace("hostile", "hôstile").encode("latin-1")),
    "invalid_utf8": Case((HEAD + TAIL).encode() + b"description: \xff\xfe\n"),
    "five_megabytes": Case(
        HEAD + TAIL + "description: '" + "x" * 5_000_000 + "'\n", has_line=False
    ),
    "template_file_syntax": Case(None, make=_with_template("{% for %}")),
    "template_file_missing_include": Case(None, make=_with_template("{% include 'x/y.j2' %}")),
    "fifo": Case(None, has_line=False, make=_fifo),
    "dev_zero_link": Case(None, has_line=False, make=_dev_zero),
}

# One process imports concilium once and forks a child per file; the child runs
# ``concilium validate FILE`` (stdout/stderr to files), and os.wait4 gives the
# child's own peak RSS. An alarm in the child is the hang guard.
DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from concilium.cli import main
    import concilium.graphs.workflows  # imported once, before the forks
    for path in sys.argv[1:]:
        out, err = path + ".out", path + ".err"
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)
            for fd, name in ((1, out), (2, err)):
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            code = 0
            try:
                main(["validate", path], prog_name="concilium")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        _, status, usage = os.wait4(pid, 0)
        print(json.dumps({"path": path, "status": status, "maxrss_kb": usage.ru_maxrss}), flush=True)
    """
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    paths: dict[str, Path] = {}
    for name, case in CORPUS.items():
        path = root / f"{name}.yaml"
        if case.make is not None:
            case.make(path)
        elif isinstance(case.text, bytes):
            path.write_bytes(case.text)
        else:
            path.write_text(case.text or "", encoding="utf-8")
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def validated(corpus: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``concilium validate`` on every file: exit code, stderr and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", DRIVER, *map(str, corpus.values())],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard, not a speed assertion
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        path = Path(row["path"])
        row["stderr"] = Path(f"{path}.err").read_text(errors="replace")
        results[path.stem] = row
    return results


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_validate_refuses_with_file_and_line(
    name: str, corpus: dict[str, Path], validated: dict[str, dict[str, Any]]
) -> None:
    row = validated[name]
    status = row["status"]
    assert os.WIFEXITED(status), f"killed by signal {os.WTERMSIG(status)} (hang or crash)"
    stderr = row["stderr"]
    assert os.WEXITSTATUS(status) == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith(f"error: {corpus[name]}"), stderr
    if CORPUS[name].has_line:
        assert stderr.startswith(f"error: {corpus[name]}:"), stderr
        line = stderr.removeprefix(f"error: {corpus[name]}:").split(":", 1)[0]
        assert line.isdigit() and int(line) >= 1, stderr
    assert row["maxrss_kb"] < MAX_RSS_MB * 1024, f"{row['maxrss_kb'] // 1024} MB"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_load_workflow_raises_a_user_error(
    name: str, corpus: dict[str, Path], validated: dict[str, dict[str, Any]]
) -> None:
    if not os.WIFEXITED(validated[name]["status"]):
        pytest.fail("validate did not finish; not loading it in the test process")
    with pytest.raises(UserError) as info:
        load_workflow(corpus[name])
    assert str(corpus[name]) in str(info.value)


def test_the_limits_leave_ordinary_files_alone(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    text = HEAD.replace("a: {model: m}", "base: &base {model: m, temperature: 0.5}\n  a: *base")
    path.write_text(
        text.replace(
            "a: *base",
            'a: {model: m, system: "You are {{ agent }}; {% for i in range(3) %}{{ i }}{% endfor %}"}',
        )
        + TAIL,
        encoding="utf-8",
    )
    wf = load_workflow(path)
    assert wf.agents["a"].system == "You are a; 012"


def test_the_messages_say_what_and_how_to_fix(
    corpus: dict[str, Path], validated: dict[str, dict[str, Any]]
) -> None:
    said = {name: row["stderr"] for name, row in validated.items()}
    assert "aliases expand to more than" in said["alias_bomb"]
    assert "recursive alias" in said["recursive_alias"]
    assert "merge keys (<<)" in said["merge_key"]
    assert "plain name" in said["complex_key"]
    assert "nesting deeper than 64" in said["deep_flow_nesting"]
    assert "tag" in said["python_tag"] and "tag" in said["tagged_key"]
    assert "too costly" in said["jinja_repeat"] and "too costly" in said["jinja_nested_ranges"]
    assert "ZeroDivisionError" in said["jinja_division_by_zero"]
    assert "'no/such.j2'" in said["jinja_missing_include"]
    assert "recurses" in said["jinja_recursion"]
    assert "models.m.timeout" in said["timeout_inf"] and "finite" in said["timeout_inf"]
    assert "simulate.latency.fixed" in said["simulate_latency_inf"]
    assert "nested more than 16" in said["patterns_nested_30"]
    assert "NUL byte at byte offset" in said["nul_byte"]
    assert "not UTF-8" in said["latin1_bytes"] and "0xf4" in said["latin1_bytes"]
    assert "larger than 1024 KiB" in said["five_megabytes"]
    assert "'debate/round'" in said["template_file_syntax"]
    assert "'x/y.j2', which does not exist" in said["template_file_missing_include"]
    assert "a FIFO" in said["fifo"] and "a character device" in said["dev_zero_link"]


def _keys_at_depth(depth: int) -> list[str]:
    fake = FakeModel(fn=lambda agent, i, msgs: "so \\boxed{4}")
    graph = self_consistency(Agent("solver", fake.spec()), samples=1)
    for level in range(depth):
        graph = self_consistency(as_agent(graph, f"lvl{level}"), samples=1)
    events: list[dict[str, Any]] = []
    run_sync(graph, "2+2?", on_event=lambda e: events.append(dict(e)))
    return [e["key"] for e in events if e["type"] == "call_started"]


def test_call_keys_grow_linearly_with_nesting() -> None:
    # The keys of unnested patterns and of one level of nesting are what state
    # files hold; they stay as they were.
    assert _keys_at_depth(0) == ["sample/solver/s0"]
    assert _keys_at_depth(1) == ["sample/sample/lvl0/s0/self_consistency/sample/solver/s0"]
    lengths = [len(_keys_at_depth(d)[0]) for d in (2, 3, 4, 12)]
    steps = {b - a for a, b in itertools.pairwise(lengths[:3])}
    assert len(steps) == 1  # a constant step per level, not a doubling
    assert lengths[-1] < lengths[0] + 10 * (steps.pop() + 2)
