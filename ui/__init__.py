"""The local web UI and self-contained HTML reports of runs.

The public names are listed in ``__all__``; the modules behind them are private.
"""

__all__: list[str] = []
