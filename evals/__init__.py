"""Evaluation: score workflows on datasets (accuracy against tokens), compare methods.

The public names are listed in ``__all__``; the modules behind them are private.
"""

__all__: list[str] = []
