"""How every benchmark ends: its figures as one JSON line, and in a file if asked."""

from __future__ import annotations

import json
from typing import Any


def emit(figures: Any, json_file: str | None) -> None:
    print(json.dumps(figures))
    if json_file:
        with open(json_file, "w") as f:
            json.dump(figures, f, indent=2)
