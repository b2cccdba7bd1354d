"""Conditions over a workflow's or a router's scope, parsed and evaluated without eval().

Workflow switches use one plain comparison (`conditions`); routing rules use the full
expression language (`expressions`: and/or/not, comparisons, arithmetic, lists, a fixed table of
names and functions, checked when a policy is saved). A workflow condition is:
    true | false
    <operand> (== | != | < | <= | > | >= | in | not in) <operand>
    <operand>                       (truthiness of a name)
An operand is a dotted name looked up in the scope (`input.message`, `vars.intent`), or a
literal: a quoted string, a number, true / false / null, or a list of literals ['a', 'b'].
"""

from workers.policy.conditions import Condition, ConditionError, parse_condition
from workers.policy.expressions import (
    EvaluationError,
    ExpressionError,
    ExpressionNameError,
    ExpressionSyntaxError,
    compile_expression,
    evaluate,
)

__all__ = [
    "Condition",
    "ConditionError",
    "EvaluationError",
    "ExpressionError",
    "ExpressionNameError",
    "ExpressionSyntaxError",
    "compile_expression",
    "evaluate",
    "parse_condition",
]
