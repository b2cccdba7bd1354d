import pytest

from workers.policy import ConditionError, parse_condition

SCOPE = {"input": {"has_contexts": True, "n": 3, "message": "hi"}, "vars": {"intent": "smalltalk", "tags": ["a"]}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("input.has_contexts == false", False),
        ("input.has_contexts == true", True),
        ("vars.intent == 'smalltalk'", True),
        ('vars.intent != "smalltalk"', False),
        ("vars.intent in ['question', 'smalltalk']", True),
        ("vars.intent not in ['question']", True),
        ("'a' in vars.tags", True),
        ("input.n >= 3", True),
        ("input.n < 3", False),
        ("vars.missing", False),
        ("vars.missing == null", True),
        ("input.n < 'text'", False),  # incomparable: false, not an error
        ("vars.intent == 'a == b'", False),  # an operator inside quotes is text
    ],
)
def test_conditions_evaluate_against_the_scope(text, expected):
    assert parse_condition(text).evaluate(SCOPE) is expected


@pytest.mark.parametrize(
    "text",
    ["", "a == b == c", "== 3", "x == __import__('os')", "input.n + 1 > 2", "vars.intent == [1, {'a': 2}]"],
)
def test_anything_but_one_plain_comparison_is_refused(text):
    with pytest.raises(ConditionError):
        parse_condition(text)


def test_names_lists_the_scope_names_a_condition_reads():
    assert parse_condition("vars.intent in input.allowed").names() == ["vars.intent", "input.allowed"]
