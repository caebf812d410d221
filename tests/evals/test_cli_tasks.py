"""concilium tasks list / make, and the shipped data files they made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from concilium.cli import main
from concilium.evals.tasks import make_task, task_names

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["tasks", *args])
    return result.exit_code, result.stdout, result.stderr


def test_list_names_every_task_with_its_description() -> None:
    code, out, _ = _invoke("list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == task_names()
    assert "100 distinct items" in next(line for line in lines if line.startswith("sums"))


def test_make_writes_jsonl_to_stdout() -> None:
    code, out, _ = _invoke("make", "sums", "--n", "7", "--seed", "2")
    assert code == 0
    items = [json.loads(line) for line in out.splitlines()]
    assert items == make_task("sums", 7, seed=2)


def test_make_writes_jsonl_to_a_file_creating_its_folder(tmp_path: Path) -> None:
    out_file = tmp_path / "sub" / "arith.jsonl"
    code, out, err = _invoke("make", "arithmetic", "--out", str(out_file))
    assert code == 0 and out == ""
    assert "wrote 50 arithmetic items" in err
    lines = out_file.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == make_task("arithmetic", 50, seed=0)


def test_make_refuses_an_unknown_task_or_too_many_items_with_the_fix() -> None:
    code, _, err = _invoke("make", "antonym")
    assert code == 2 and "Did you mean 'antonyms'" in err
    code, _, err = _invoke("make", "capitals", "--n", "500")
    assert code == 2 and "n <= 70" in err


@pytest.mark.parametrize("name", task_names())
def test_shipped_data_equals_a_fresh_generation(name: str) -> None:
    """examples/data/NAME.jsonl is `concilium tasks make NAME --n 50 --seed 0 --out ...`."""
    code, out, _ = _invoke("make", name, "--n", "50", "--seed", "0")
    assert code == 0
    assert (DATA / f"{name}.jsonl").read_text(encoding="utf-8") == out
