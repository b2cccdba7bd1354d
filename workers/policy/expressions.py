"""The routing policies' expression language: parsed by hand into a small tree and evaluated by
walking it. No eval, no Python attribute or builtin is reachable: names resolve only in the
scope given, functions only from the table given.

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/" | "%") unary)*
    unary    := "-" unary | primary
    primary  := number | string | true | false | null | list | name | call | "(" expr ")"
    list     := "[" (expr ("," expr)*)? "]"
    name     := identifier ("." identifier)*          e.g. safety_risk, user.plan
    call     := identifier "(" (expr ("," expr)*)? ")"

At most MAX_LENGTH characters and MAX_DEPTH levels of nesting. `parse` raises
ExpressionSyntaxError (with the character position), `check` ExpressionNameError for names and
functions outside the tables (or calls with the wrong number of arguments), and `evaluate`
raises only EvaluationError: a type mismatch, a division by zero, a missing value is an error
the caller records, never silently false.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_LENGTH = 1000
MAX_DEPTH = 32
MAX_LIST = 256


class ExpressionError(ValueError):
    """Anything wrong with an expression; `position` is a 0-based character offset or None."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message if position is None else f"{message} (at character {position + 1})")
        self.message = message
        self.position = position


class ExpressionSyntaxError(ExpressionError):
    pass


class ExpressionNameError(ExpressionError):
    pass


class EvaluationError(ExpressionError):
    pass


# ---------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Literal:
    value: object
    position: int


@dataclass(frozen=True)
class Name:
    path: tuple[str, ...]
    position: int

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class ListOf:
    items: tuple
    position: int


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple
    position: int


@dataclass(frozen=True)
class Unary:
    op: str
    operand: object
    position: int


@dataclass(frozen=True)
class Binary:
    op: str
    left: object
    right: object
    position: int


# ---------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,|\.)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True)
class _Token:
    kind: str  # number | string | word | op | end
    text: str
    position: int


def _tokens(source: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise ExpressionSyntaxError(f"unexpected character {source[position]!r}", position)
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _unquote(text: str, position: int) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            escaped = body[i + 1] if i + 1 < len(body) else ""
            if escaped not in _ESCAPES:
                raise ExpressionSyntaxError(f"unknown escape \\{escaped}", position + i + 1)
            out.append(_ESCAPES[escaped])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


# ---------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, source: str):
        self.tokens = _tokens(source)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def _advance(self) -> _Token:
        token = self.current
        self.index += 1
        return token

    def _at(self, kind: str, *texts: str) -> bool:
        token = self.current
        return token.kind == kind and (not texts or token.text in texts)

    def _expect(self, kind: str, text: str) -> _Token:
        if not self._at(kind, text):
            found = self.current.text or "the end"
            raise ExpressionSyntaxError(f"expected {text!r}, found {found!r}", self.current.position)
        return self._advance()

    def _nested(self, position: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionSyntaxError(f"nested more than {MAX_DEPTH} levels deep", position)

    def parse(self):
        tree = self._or()
        if not self._at("end"):
            raise ExpressionSyntaxError(f"unexpected {self.current.text!r}", self.current.position)
        return tree

    def _or(self):
        left = self._and()
        while self._at("word", "or"):
            token = self._advance()
            left = Binary("or", left, self._and(), token.position)
        return left

    def _and(self):
        left = self._not()
        while self._at("word", "and"):
            token = self._advance()
            left = Binary("and", left, self._not(), token.position)
        return left

    def _not(self):
        if self._at("word", "not"):
            token = self._advance()
            self._nested(token.position)
            operand = self._not()
            self.depth -= 1
            return Unary("not", operand, token.position)
        return self._compare()

    def _compare(self):
        left = self._sum()
        if self._at("op", "==", "!=", "<", "<=", ">", ">="):
            token = self._advance()
            return Binary(token.text, left, self._sum(), token.position)
        if self._at("word", "in"):
            token = self._advance()
            return Binary("in", left, self._sum(), token.position)
        if (
            self._at("word", "not")
            and self.tokens[self.index + 1].kind == "word"
            and self.tokens[self.index + 1].text == "in"
        ):
            token = self._advance()
            self._advance()
            return Binary("not in", left, self._sum(), token.position)
        return left

    def _sum(self):
        left = self._product()
        while self._at("op", "+", "-"):
            token = self._advance()
            left = Binary(token.text, left, self._product(), token.position)
        return left

    def _product(self):
        left = self._unary()
        while self._at("op", "*", "/", "%"):
            token = self._advance()
            left = Binary(token.text, left, self._unary(), token.position)
        return left

    def _unary(self):
        if self._at("op", "-"):
            token = self._advance()
            self._nested(token.position)
            operand = self._unary()
            self.depth -= 1
            return Unary("-", operand, token.position)
        return self._primary()

    def _primary(self):
        token = self.current
        if token.kind == "number":
            self._advance()
            value = float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
            if isinstance(value, float) and not math.isfinite(value):
                raise ExpressionSyntaxError("number out of range", token.position)
            return Literal(value, token.position)
        if token.kind == "string":
            self._advance()
            return Literal(_unquote(token.text, token.position), token.position)
        if self._at("op", "("):
            self._advance()
            self._nested(token.position)
            inner = self._or()
            self.depth -= 1
            self._expect("op", ")")
            return inner
        if self._at("op", "["):
            self._advance()
            self._nested(token.position)
            items = self._items("]")
            self.depth -= 1
            if len(items) > MAX_LIST:
                raise ExpressionSyntaxError(f"lists hold at most {MAX_LIST} items", token.position)
            return ListOf(tuple(items), token.position)
        if token.kind == "word":
            if token.text in ("true", "false", "null"):
                self._advance()
                return Literal({"true": True, "false": False, "null": None}[token.text], token.position)
            if token.text in _KEYWORDS:
                raise ExpressionSyntaxError(f"unexpected {token.text!r}", token.position)
            self._advance()
            if self._at("op", "("):
                self._advance()
                self._nested(token.position)
                args = self._items(")")
                self.depth -= 1
                return Call(token.text, tuple(args), token.position)
            path = [token.text]
            while self._at("op", "."):
                self._advance()
                part = self.current
                if part.kind != "word" or part.text in _KEYWORDS:
                    raise ExpressionSyntaxError("expected a name after '.'", part.position)
                path.append(self._advance().text)
            return Name(tuple(path), token.position)
        found = token.text or "the end"
        raise ExpressionSyntaxError(f"expected a value, found {found!r}", token.position)

    def _items(self, closing: str) -> list:
        items = []
        if not self._at("op", closing):
            items.append(self._or())
            while self._at("op", ","):
                self._advance()
                items.append(self._or())
        self._expect("op", closing)
        return items


def parse(source: str):
    """The expression's tree; ExpressionSyntaxError naming the position of the fault."""
    if not isinstance(source, str):
        raise ExpressionSyntaxError("an expression is a string")
    if len(source) > MAX_LENGTH:
        raise ExpressionSyntaxError(f"longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if not source.strip():
        raise ExpressionSyntaxError("empty expression", 0)
    return _Parser(source).parse()


# ---------------------------------------------------------------- names and functions


@dataclass(frozen=True)
class Function:
    implementation: Callable
    min_args: int
    max_args: int


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationError(f"{what} must be a number, not {_type_name(value)}")
    return value


def _vector(value, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or not value:
        raise EvaluationError(f"{what} must be a non-empty list of numbers, not {_type_name(value)}")
    return [_number(v, what) for v in value]


def _cosine_similarity(a, b) -> float:
    a, b = _vector(a, "cosine_similarity's first argument"), _vector(b, "cosine_similarity's second argument")
    if len(a) != len(b):
        raise EvaluationError(f"cosine_similarity of vectors of {len(a)} and {len(b)} dimensions")
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0:
        raise EvaluationError("cosine_similarity of a zero vector")
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm


def _contains(haystack, needle) -> bool:
    if isinstance(haystack, str) and isinstance(needle, str):
        return needle.lower() in haystack.lower()
    if isinstance(haystack, (list, tuple)):
        return needle in haystack
    raise EvaluationError(f"contains needs text or a list, not {_type_name(haystack)}")


def _length(value) -> int:
    if isinstance(value, (str, list, tuple)):
        return len(value)
    raise EvaluationError(f"len needs text or a list, not {_type_name(value)}")


def _extreme(pick):
    def run(*values):
        items = values[0] if len(values) == 1 and isinstance(values[0], (list, tuple)) else values
        if not items:
            raise EvaluationError("min and max need at least one number")
        return pick(_number(v, "min and max's arguments") for v in items)

    return run


BUILTIN_FUNCTIONS = {
    "cosine_similarity": Function(_cosine_similarity, 2, 2),
    "contains": Function(_contains, 2, 2),
    "len": Function(_length, 1, 1),
    "min": Function(_extreme(min), 1, MAX_LIST),
    "max": Function(_extreme(max), 1, MAX_LIST),
}
# Names a routing rule may read; the router fills them in per message.
# adapter_similarity: the cosine similarity of the message to the candidate adapter's centroid
# (null when it has none), so a rule can ask for "the nearest skill, if near enough".
ROUTING_NAMES = frozenset(
    {
        "ctx_embedding",
        "ctx_cluster",
        "adapter_type",
        "adapter_similarity",
        "safety_risk",
        "intent",
        "has_context",
        "user.plan",
    }
)
# Functions whose data the router supplies (a cluster's label lives in the database).
ROUTING_FUNCTIONS = {"cluster_label_contains": (2, 2)}


def check(tree, *, names=ROUTING_NAMES, functions=None) -> None:
    """Every name read is one of `names`, every function called is a builtin or one of
    `functions` (name -> (min args, max args)), with a fitting number of arguments."""
    functions = {
        **{k: (f.min_args, f.max_args) for k, f in BUILTIN_FUNCTIONS.items()},
        **(functions or ROUTING_FUNCTIONS),
    }
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Name):
            if node.dotted not in names:
                known = ", ".join(sorted(names))
                raise ExpressionNameError(f"unknown name {node.dotted!r} (known: {known})", node.position)
        elif isinstance(node, Call):
            if node.function not in functions:
                known = ", ".join(sorted(functions))
                raise ExpressionNameError(f"unknown function {node.function!r} (known: {known})", node.position)
            low, high = functions[node.function]
            if not low <= len(node.args) <= high:
                wanted = str(low) if low == high else f"{low} to {high}"
                raise ExpressionNameError(
                    f"{node.function} takes {wanted} argument{'s' if high != 1 else ''}, not {len(node.args)}",
                    node.position,
                )
        stack.extend(_children(node))


def _children(node) -> tuple:
    if isinstance(node, Call):
        return node.args
    if isinstance(node, ListOf):
        return node.items
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    return ()


def names_read(tree) -> set[str]:
    """The dotted names an expression reads."""
    found, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Name):
            found.add(node.dotted)
        stack.extend(_children(node))
    return found


def compile_expression(source: str, *, names=ROUTING_NAMES, functions=None):
    """Parse and check: what a policy's save does with each rule's `when`."""
    tree = parse(source)
    check(tree, names=names, functions=functions)
    return tree


# ---------------------------------------------------------------- evaluation


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a value of another kind"


def _truth(value, position: int) -> bool:
    if isinstance(value, bool):
        return value
    raise EvaluationError(f"expected true or false, got {_type_name(value)}", position)


def _compare(op: str, left, right, position: int) -> bool:
    if op in ("==", "!="):
        equal = left == right and _type_name(left) == _type_name(right)
        return equal if op == "==" else not equal
    if op in ("in", "not in"):
        if isinstance(right, str) and isinstance(left, str):
            found = left in right
        elif isinstance(right, (list, tuple)):
            found = left in right
        else:
            raise EvaluationError(f"'{op}' needs text or a list on its right, not {_type_name(right)}", position)
        return found if op == "in" else not found
    both_numbers = all(not isinstance(v, bool) and isinstance(v, (int, float)) for v in (left, right))
    both_text = isinstance(left, str) and isinstance(right, str)
    if not (both_numbers or both_text):
        raise EvaluationError(f"cannot compare {_type_name(left)} with {_type_name(right)} using {op}", position)
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _arithmetic(op: str, left, right, position: int):
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        if len(left) + len(right) > 100_000:
            raise EvaluationError("text too long", position)
        return left + right
    try:
        a, b = _number(left, f"the left side of {op}"), _number(right, f"the right side of {op}")
    except EvaluationError as exc:
        raise EvaluationError(exc.message, position) from None
    if op in ("/", "%") and b == 0:
        raise EvaluationError("division by zero", position)
    result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b, "%": lambda: a % b}[op]()
    if isinstance(result, float) and not math.isfinite(result):
        raise EvaluationError("the result is not a finite number", position)
    if isinstance(result, int) and abs(result) > 2**63:
        raise EvaluationError("the result is too large", position)
    return result


def evaluate(tree, scope: dict, *, functions: dict[str, Callable] | None = None):
    """The expression's value in `scope` (dotted names look into nested dicts). Raises only
    EvaluationError, with the position of the part that failed."""
    table = {**{k: f.implementation for k, f in BUILTIN_FUNCTIONS.items()}, **(functions or {})}
    return _evaluate(tree, scope, table)


def _evaluate(node, scope, table):
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        value = scope
        for part in node.path:
            if not isinstance(value, dict) or part not in value:
                raise EvaluationError(f"{node.dotted} has no value here", node.position)
            value = value[part]
        return value
    if isinstance(node, ListOf):
        return [_evaluate(item, scope, table) for item in node.items]
    if isinstance(node, Call):
        if node.function not in table:
            raise EvaluationError(f"unknown function {node.function!r}", node.position)
        args = [_evaluate(arg, scope, table) for arg in node.args]
        try:
            return table[node.function](*args)
        except EvaluationError as exc:
            raise EvaluationError(exc.message, node.position) from None
        except Exception as exc:  # a caller's function failing is this expression's error
            raise EvaluationError(f"{node.function} failed: {exc.__class__.__name__}", node.position) from None
    if isinstance(node, Unary):
        operand = _evaluate(node.operand, scope, table)
        if node.op == "not":
            return not _truth(operand, node.position)
        return _arithmetic("-", 0, operand, node.position)
    if isinstance(node, Binary):
        if node.op in ("and", "or"):
            left = _truth(_evaluate(node.left, scope, table), node.position)
            if (node.op == "and" and not left) or (node.op == "or" and left):
                return left
            return _truth(_evaluate(node.right, scope, table), node.position)
        left, right = _evaluate(node.left, scope, table), _evaluate(node.right, scope, table)
        if node.op in ("==", "!=", "<", "<=", ">", ">=", "in", "not in"):
            return _compare(node.op, left, right, node.position)
        return _arithmetic(node.op, left, right, node.position)
    raise EvaluationError("not an expression")
