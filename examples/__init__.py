"""The example workflows, data files and documents, shipped with the package.

The web UI lists these workflows beside the user's own, and ``concilium research`` and
``concilium bench research`` default to the research assistant here, so the defaults
work from an installed wheel as from a checkout.

Example:
    >>> (FOLDER / "debate.yaml").is_file()
    True
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
"""The folder of the shipped examples."""

__all__ = ["FOLDER"]
