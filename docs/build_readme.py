"""Assemble README.md from docs/*.md (each part is kept beside the code it documents).

    .venv/bin/python docs/build_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["overview", "demo", "ingest", "demo_corpus", "text_metrics", "models", "engines", "score", "streaming", "errors", "train", "monitor",
         "report", "ui", "flows", "scale", "bench", "deps", "testing"]


def part(name: str) -> str:
    p = ROOT / "docs" / f"{name}.md"
    if not p.exists():
        return ""
    text = p.read_text().strip()
    if text.startswith("# "):  # demote a part written with a top-level title
        text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)
    return text


def main() -> None:
    head = (ROOT / "README.md").read_text().split("<!-- SECTIONS -->")[0]
    body = "\n\n".join(t for t in (part(n) for n in ORDER) if t)
    (ROOT / "README.md").write_text(head + "<!-- SECTIONS -->\n" + body + "\n")


if __name__ == "__main__":
    main()
