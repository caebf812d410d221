"""The ``concilium`` command line: one module per command group over ``concilium.app``.

Example:
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(main, ["--help"]).exit_code
    0
"""

from ._main import main

__all__ = ["main"]
