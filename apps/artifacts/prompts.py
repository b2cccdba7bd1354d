"""Filling a prompt that an artifact holds (an admin may edit it, so it may hold any braces)."""

import re

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill_prompt(template: str, values: dict[str, str]) -> str:
    """Each `{name}` of `values` replaced by its value, in one pass: a value that itself holds
    `{name}` (a user's question, a JSON Schema's description) is never filled again. Other braces
    stay as written."""
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), template)
