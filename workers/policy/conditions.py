"""One comparison, parsed once and evaluated against a scope of plain dicts."""

import ast
import operator
import re
from dataclasses import dataclass

_OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "in": lambda a, b: b is not None and a in b,
    "not in": lambda a, b: b is None or a not in b,
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# The operator, outside quotes: longest symbols first; words need spaces around them.
_SPLIT = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|\s+(not\s+in|in)\s+|(==|!=|<=|>=|<|>)""")
_LITERAL_WORDS = {"true": True, "false": False, "null": None, "none": None}
_MISSING = object()


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True)
class Operand:
    name: str | None = None
    value: object = None

    def resolve(self, scope: dict):
        if self.name is None:
            return self.value
        node = scope
        for part in self.name.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return None
        return node


@dataclass(frozen=True)
class Condition:
    text: str
    left: Operand
    op: str | None = None
    right: Operand | None = None

    def evaluate(self, scope: dict) -> bool:
        left = self.left.resolve(scope)
        if self.op is None:
            return bool(left)
        right = self.right.resolve(scope)
        try:
            return bool(_OPERATORS[self.op](left, right))
        except TypeError:
            return False  # e.g. None < 3: a comparison that cannot hold is false, not an error

    def names(self) -> list[str]:
        return [o.name for o in (self.left, self.right) if o is not None and o.name is not None]


def _operand(text: str, whole: str) -> Operand:
    text = text.strip()
    if not text:
        raise ConditionError(f"Missing operand in {whole!r}.")
    if text.lower() in _LITERAL_WORDS:
        return Operand(value=_LITERAL_WORDS[text.lower()])
    if _NAME.match(text):
        return Operand(name=text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ConditionError(f"{text!r} is neither a name nor a literal in {whole!r}.") from exc
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, str | int | float | bool | list) or (
        isinstance(value, list) and not all(isinstance(v, str | int | float | bool) for v in value)
    ):
        raise ConditionError(f"{text!r} is not a plain literal in {whole!r}.")
    return Operand(value=value)


def parse_condition(text: str) -> Condition:
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("A condition must be a non-empty string.")
    if len(text) > 2000:
        raise ConditionError("A condition is at most 2000 characters.")
    found = [m for m in _SPLIT.finditer(text) if not m.group(1)]
    if not found:
        return Condition(text=text, left=_operand(text, text))
    if len(found) > 1:
        raise ConditionError(f"Only one comparison per condition for now: {text!r}.")
    match = found[0]
    op = " ".join((match.group(2) or match.group(3)).split())
    return Condition(
        text=text,
        left=_operand(text[: match.start()], text),
        op=op,
        right=_operand(text[match.end() :], text),
    )
