import json
import math

import numpy as np
import pytest

from workers.train import GateReport, evaluate_gate, paired_bootstrap, retention_prompts, retention_prompts_version
from workers.train.gate import RETENTION_PROMPTS_FILE


@pytest.fixture
def current():
    return np.random.default_rng(1).normal(-2.0, 0.4, size=12)


def test_a_clear_improvement_has_an_interval_above_zero(current):
    noise = np.random.default_rng(2).normal(0, 0.05, 12)
    interval = paired_bootstrap(list(current + 0.5 + noise), list(current))
    assert interval["n"] == 12
    assert 0 < interval["low"] < interval["mean_delta"] < interval["high"]
    assert interval["mean_delta"] == pytest.approx(0.5 + noise.mean())


def test_no_change_gives_an_interval_that_straddles_zero(current):
    noise = np.random.default_rng(3).normal(0, 0.1, 12)
    interval = paired_bootstrap(current + noise - noise.mean(), current)
    assert interval["low"] < 0 < interval["high"]


def test_a_clear_regression_has_an_interval_below_zero(current):
    interval = paired_bootstrap(current - 0.4 + np.random.default_rng(4).normal(0, 0.05, 12), current)
    assert interval["low"] < interval["high"] < 0


def test_the_bootstrap_is_deterministic_for_a_seed_and_varies_with_it(current):
    noisy = current + np.random.default_rng(5).normal(0.1, 0.3, 12)
    assert paired_bootstrap(noisy, current, seed=3) == paired_bootstrap(noisy, current, seed=3)
    assert paired_bootstrap(noisy, current, seed=3)["low"] != paired_bootstrap(noisy, current, seed=4)["low"]


def test_a_wider_confidence_gives_a_wider_interval(current):
    noisy = current + np.random.default_rng(6).normal(0.1, 0.3, 12)
    narrow, wide = paired_bootstrap(noisy, current, confidence=0.5), paired_bootstrap(noisy, current, confidence=0.99)
    assert wide["low"] < narrow["low"] < narrow["high"] < wide["high"]


def test_the_bootstrap_refuses_unpaired_or_non_finite_values():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([-1.0, -2.0], [-1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([-1.0, float("nan")], [-1.0, -2.0])
    assert paired_bootstrap([], []) == {"mean_delta": None, "low": None, "high": None, "n": 0}


def _gate(**overrides) -> GateReport:
    spread = np.linspace(-0.2, 0.2, 10)
    arguments = {
        "held_out_candidate": list(-0.6 + spread),
        "held_out_current": list(-2.0 + spread),
        "fact_checks": [("Ada Lumen maintains it.", "Frobnicator is maintained by ADA LUMEN. ada lumen maintains it!")],
        "retention_candidate": [-1.02] * 50,
        "retention_current": [-1.0] * 50,
        "retention_set": retention_prompts_version(),
    }
    return evaluate_gate(**{**arguments, **overrides})


def test_a_good_candidate_passes_every_check_with_a_readable_json_report():
    report = _gate()
    assert report.passed and report.failed == []
    assert list(report.checks) == ["held_out", "improvement", "facts", "retention"]
    summary = report.summary()
    assert summary.startswith("The candidate passed the gate: all 4 checks passed.")
    assert "rose by 1.400 nats" in summary and "10 held-out examples" in summary
    assert "keep 98.0% of their per-token probability" in summary
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is True and data["retention_set"] == "retention-v1"
    assert data["checks"]["improvement"]["low"] > 0
    assert data["checks"]["facts"] == {
        "passed": True,
        "checked": 1,
        "found": 1,
        "missing": [],
        "ignored_blank": 0,
        "detail": "the corrected fact appears in the candidate's greedy answer.",
    }
    assert data["checks"]["retention"]["probability_ratio"] == pytest.approx(math.exp(-0.02))


def test_too_few_held_out_examples_fail_the_gate_with_the_reason():
    report = _gate(held_out_candidate=[-0.5, -0.6, -0.7, -0.4], held_out_current=[-2.0, -2.1, -1.9, -2.2])
    assert not report.passed and report.failed == ["held_out"]
    assert report.checks["improvement"]["passed"]
    assert "FAILED held_out: only 4 held-out examples; at least 8 are needed" in report.summary()
    assert _gate(min_held_out=11).failed == ["held_out"]


def test_a_worse_candidate_fails_the_improvement_check():
    report = _gate(held_out_candidate=list(-2.3 + np.linspace(-0.2, 0.2, 10)))
    assert report.failed == ["improvement"] and report.checks["improvement"]["high"] < 0
    assert "FAILED improvement: the held-out targets' per-token log-probability fell by 0.300 nats" in report.summary()
    assert "worse: the whole interval lies below 0." in report.summary()


def test_a_noisy_tie_fails_the_improvement_check_but_an_exact_tie_passes():
    current = list(-2.0 + np.linspace(-0.2, 0.2, 10))
    noise = [0.1, -0.1] * 5
    noisy = _gate(held_out_current=current, held_out_candidate=[c + d for c, d in zip(current, noise, strict=True)])
    assert noisy.failed == ["improvement"] and noisy.checks["improvement"]["low"] < 0
    assert "possibly worse: the lower bound is below 0." in noisy.summary()
    tie = _gate(held_out_current=current, held_out_candidate=current)
    assert tie.passed and "log-probability did not change" in tie.summary()


def test_a_missing_fact_fails_the_facts_check_and_names_it():
    report = _gate(fact_checks=[("Ada Lumen", "It is maintained by Ada Lumen."), ("Ada Lumen", "Nobody knows.")])
    assert report.failed == ["facts"]
    facts = report.checks["facts"]
    assert (facts["checked"], facts["found"]) == (2, 1)
    assert facts["missing"] == [{"fact": "Ada Lumen", "answer": "Nobody knows."}]
    assert "FAILED facts: 1 of 2 corrected facts appear" in report.summary()
    assert "for example 'Ada Lumen' is missing from 'Nobody knows.'" in report.summary()


def test_no_corrections_means_no_facts_to_fail():
    report = _gate(fact_checks=[("  ", "Anything.")])
    assert report.passed and report.checks["facts"]["checked"] == 0 and report.checks["facts"]["ignored_blank"] == 1
    assert "Passed facts: no corrected facts to check." in report.summary()


def test_forgetting_unrelated_answers_fails_the_retention_check():
    forgot = _gate(retention_candidate=[-1.2] * 50)
    assert forgot.failed == ["retention"]
    retention = forgot.checks["retention"]
    assert retention["probability_ratio"] == pytest.approx(math.exp(-0.2))
    assert retention["prompts_below_ratio"] == 50
    assert "FAILED retention: on 50 unrelated prompts the current answers keep 81.9%" in forgot.summary()


def test_retention_is_a_ratio_of_per_token_probabilities_not_of_log_probabilities():
    # A drop of 0.04 nats keeps 96% of the probability whatever the starting level; scaling the
    # log-probability by 0.95 would fail the confident case and wave through the unsure one.
    for level in (-0.1, -3.0):
        assert _gate(retention_current=[level] * 50, retention_candidate=[level - 0.04] * 50).passed
        assert _gate(retention_current=[level] * 50, retention_candidate=[level - 0.06] * 50).failed == ["retention"]
    mixed = _gate(retention_current=[-1.0] * 50, retention_candidate=[-0.9] * 25 + [-1.15] * 25)
    assert mixed.passed and mixed.checks["retention"]["prompts_below_ratio"] == 25
    assert mixed.checks["retention"]["worst_prompt_ratio"] == pytest.approx(math.exp(-0.15))


def test_retention_without_answers_fails_and_unpaired_values_raise():
    report = _gate(retention_candidate=[], retention_current=[])
    assert report.failed == ["retention"] and "no retention answers" in report.summary()
    json.dumps(report.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="differ in length"):
        _gate(retention_candidate=[-1.0] * 49)


def test_several_failures_are_all_reported():
    report = _gate(
        held_out_candidate=[-3.0] * 4,
        held_out_current=[-2.0] * 4,
        fact_checks=[("Ada", "Bob.")],
        retention_candidate=[-2.0] * 50,
    )
    assert report.failed == ["held_out", "improvement", "facts", "retention"]
    assert report.summary().startswith(
        "The candidate did not pass the gate: 4 of 4 checks failed (held_out, improvement, facts, retention)."
    )


def test_the_retention_set_is_fifty_distinct_versioned_prompts():
    data = json.loads(RETENTION_PROMPTS_FILE.read_text())
    assert data["version"] == retention_prompts_version() == "retention-v1"
    prompts = retention_prompts()
    assert prompts == data["prompts"]
    assert len(prompts) == 50 and len({p.casefold().strip() for p in prompts}) == 50
    assert all(p.strip() and len(p) < 80 for p in prompts)
    assert sum(p.startswith("Who ") for p in prompts) >= 5


def test_the_retention_set_does_not_overlap_the_replayed_prompts():
    replayed = json.loads(RETENTION_PROMPTS_FILE.with_name("replay_prompts.v1.json").read_text())["prompts"]
    assert not {p.casefold() for p in replayed} & {p.casefold() for p in retention_prompts()}
