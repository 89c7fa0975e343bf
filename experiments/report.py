"""What every experiment ends with: its figures printed as JSON, and written to ``--json`` when given."""
from __future__ import annotations

import json
from pathlib import Path


def emit(figures: dict, path: Path | None) -> int:
    """Print ``figures`` (UTF-8, indented) and write them to ``path`` when one is given; -> exit status 0."""
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")
    return 0
