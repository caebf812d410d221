"""The README's Python example is examples/quickstart.py, and prints what the README says."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quickstart_is_the_example_file_and_its_output_is_true() -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(
        r"<!-- quickstart: examples/quickstart.py -->\n```python\n(.*?)```", readme, re.S
    ).group(1)
    assert code == (ROOT / "examples" / "quickstart.py").read_text()
    shown = re.search(r"<!-- quickstart-output -->\n```text\n(.*?)```", readme, re.S).group(1)
    out = subprocess.run(
        [sys.executable, "-P", "examples/quickstart.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == shown


def test_readme_own_pattern_is_the_example_file_and_its_output_is_true() -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(
        r"<!-- own-pattern: examples/own_pattern.py -->\n```python\n(.*?)```", readme, re.S
    )
    assert code is not None and code.group(1) == (ROOT / "examples" / "own_pattern.py").read_text()
    shown = re.search(r"<!-- own-pattern-output -->\n```text\n(.*?)```", readme, re.S)
    out = subprocess.run(
        [sys.executable, "-P", "examples/own_pattern.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown is not None and out.stdout == shown.group(1)


def test_readme_gives_the_two_setup_commands() -> None:
    """The first screen's set-up block holds exactly two commands, make demo and make test."""
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    block = re.search(r"```bash\n(.*?)```", first_screen, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_readme_shows_the_demo_output_it_describes() -> None:
    """The first screen shows concilium demo's real output: the comparison table, the
    majority@k curve with costs, and the time of each way of drawing samples."""
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- demo-output -->\n```text\n(.*?)```", readme, re.S)
    assert shown is not None
    for part in ("base_sample", "base_self_consistency", "majority@k for", "tokens",
                 "how the samples are drawn", "one request, n=9", "9 requests in sequence"):  # fmt: skip
        assert part in shown.group(1), part
    assert readme.index("<!-- demo-output -->") < readme.index("## Python in fifteen lines")


def test_readme_pattern_list_links_every_pattern_module_and_example() -> None:
    readme = (ROOT / "README.md").read_text()
    modules = [
        p.name for p in (ROOT / "graphs" / "patterns").glob("_*.py") if p.name != "__init__.py"
    ]
    examples = [p.name for p in (ROOT / "examples").glob("*.yaml")]
    assert [m for m in modules if f"(graphs/patterns/{m})" not in readme] == []
    assert [e for e in examples if f"(examples/{e})" not in readme] == []


def test_readme_layers_example_runs_from_the_checkout_root() -> None:
    """Run as a newcomer does after cloning: plain ``python`` in the checkout (no -P),
    which imports the installed package because no folder there is named concilium."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- layers: examples/layers.py -->\n```python\n(.*?)```", readme, re.S)
    assert code is not None and code.group(1) == (ROOT / "examples" / "layers.py").read_text()
    shown = re.search(r"<!-- layers-output -->\n```text\n(.*?)```", readme, re.S)
    out = subprocess.run(
        [sys.executable, "examples/layers.py"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert shown is not None and out.stdout == shown.group(1)
