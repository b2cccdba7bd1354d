"""Conditions over a workflow's or a router's scope, parsed and evaluated without eval().

For now a condition is one plain comparison (the router brings the full expression language):
    true | false
    <operand> (== | != | < | <= | > | >= | in | not in) <operand>
    <operand>                       (truthiness of a name)
An operand is a dotted name looked up in the scope (`input.message`, `vars.intent`), or a
literal: a quoted string, a number, true / false / null, or a list of literals ['a', 'b'].
"""

from workers.policy.conditions import Condition, ConditionError, parse_condition

__all__ = ["Condition", "ConditionError", "parse_condition"]
