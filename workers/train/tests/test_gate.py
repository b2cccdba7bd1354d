import numpy as np

from workers.train.gate import evaluate_gate, paired_bootstrap, retention_prompts


def test_the_bootstrap_interval_tells_better_same_and_worse_apart():
    rng = np.random.default_rng(1)
    current = rng.normal(-2.0, 0.3, size=12)
    better = paired_bootstrap(current + 0.5 + rng.normal(0, 0.05, 12), current)
    assert better["low"] > 0 and better["n"] == 12
    same = paired_bootstrap(current + rng.normal(0, 0.1, 12), current)
    assert same["low"] < 0 < same["high"]
    worse = paired_bootstrap(current - 0.5, current)
    assert worse["high"] < 0
    assert paired_bootstrap(current + 0.1, current, seed=3) == paired_bootstrap(current + 0.1, current, seed=3)


def _gate(**overrides):
    arguments = {
        "held_out_candidate": [-0.5] * 8,
        "held_out_current": [-2.0] * 8,
        "fact_checks": [("Ada Lumen", "It is maintained by Ada Lumen.")],
        "retention_candidate": [-1.01] * 50,
        "retention_current": [-1.0] * 50,
    }
    return evaluate_gate(**{**arguments, **overrides})


def test_a_good_candidate_passes_with_a_readable_report():
    report = _gate()
    assert report.passed and all(check["passed"] for check in report.checks.values())
    assert report.summary().startswith("The candidate passed the gate.")
    assert report.to_dict()["checks"]["retention"]["probability_ratio"] > 0.95


def test_each_check_can_fail_the_gate_and_says_why():
    too_few = _gate(held_out_candidate=[-0.5] * 4, held_out_current=[-2.0] * 4)
    assert not too_few.passed and "4 held-out examples" in too_few.summary()
    worse = _gate(held_out_candidate=[-3.0] * 8)
    assert not worse.passed and not worse.checks["improvement"]["passed"]
    missing = _gate(fact_checks=[("Ada Lumen", "Nobody knows.")])
    assert not missing.passed and missing.checks["facts"]["missing"][0]["answer"] == "Nobody knows."
    forgot = _gate(retention_candidate=[-1.2] * 50)
    assert not forgot.passed and "FAILED: retention" in forgot.summary()


def test_the_retention_set_is_fifty_distinct_prompts():
    prompts = retention_prompts()
    assert len(prompts) == 50 and len(set(prompts)) == 50
