"""Line diffs of artifact bodies, for the admin's version diff and ConfigOps' patch pages."""

import difflib
import json


def pretty(body) -> str:
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False)


def _line_kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "added", "-": "removed"}.get(line[:1], "context")


def body_diff(before, after, *, before_label: str, after_label: str) -> list[tuple[str, str]]:
    """[(kind, line)] of a unified diff of two bodies pretty-printed with sorted keys; kind is
    file, hunk, added, removed or context (for the template's colours)."""
    lines = difflib.unified_diff(
        pretty(before).splitlines(), pretty(after).splitlines(), before_label, after_label, lineterm=""
    )
    return [(_line_kind(line), line) for line in lines]
