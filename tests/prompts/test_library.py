from pathlib import Path

import pytest

from concilium._errors import PromptError
from concilium.prompts import PromptLibrary
from concilium.prompts._library import render


def test_builtin_debate_round_lists_each_other_solution() -> None:
    text = render("debate/round", question="Q?", others=["one", "two"], answer_format="as X")
    assert text.count("One agent solution: ```") == 2 and "The original problem is: Q?" in text


def test_user_folder_overrides_builtin(tmp_path: Path) -> None:
    (tmp_path / "debate").mkdir()
    (tmp_path / "debate" / "initial.j2").write_text("custom {{ question }}")
    assert PromptLibrary([tmp_path]).render("debate/initial", question="q") == "custom q"


def test_missing_template_suggests() -> None:
    with pytest.raises(PromptError, match="Did you mean 'debate/round'"):
        render("debate/rond")


def test_missing_variable_is_an_error_not_empty() -> None:
    with pytest.raises(PromptError, match="variables given: question"):
        render("debate/initial", question="q")


def test_sandbox_blocks_attribute_escapes() -> None:
    lib = PromptLibrary()
    with pytest.raises(PromptError, match="sandbox"):
        lib.render_string("{{ ''.__class__.__mro__[1].__subclasses__() }}")
