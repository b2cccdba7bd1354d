"""The validation gate's statistics: is a candidate adapter version at least as good as the
current one? Plain numpy, no Django.

Checks (all must pass):
- held_out: enough held-out examples to judge by (at least `min_held_out`).
- improvement: the candidate's per-token log-probability of the held-out targets is not worse
  than the current version's: the lower bound of a paired bootstrap 95% interval of the mean
  difference is at least 0.
- facts: where a held-out example is a correction, the candidate's greedy answer contains it.
- retention: on a fixed set of unrelated prompts, the candidate gives the current version's own
  answers a mean per-token probability at least `retention_ratio` (0.95) of the current one's,
  i.e. mean log-prob(candidate) ≥ mean log-prob(current) + log(0.95). Per-token probability is
  the quantity "stays ≥ 0.95 of its value" can mean for log-probabilities, which are negative.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RETENTION_PROMPTS = Path(__file__).resolve().with_name("retention_prompts.v1.json")


def retention_prompts() -> list[str]:
    """The fixed, versioned set of 50 unrelated prompts the retention check asks."""
    return list(json.loads(RETENTION_PROMPTS.read_text())["prompts"])


def paired_bootstrap(candidate, current, *, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of candidate − current and its bootstrap percentile interval over paired examples."""
    deltas = np.asarray(candidate, dtype=np.float64) - np.asarray(current, dtype=np.float64)
    n = deltas.size
    if n == 0:
        return {"mean_delta": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = deltas[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    return {
        "mean_delta": float(deltas.mean()),
        "low": float(np.quantile(means, tail)),
        "high": float(np.quantile(means, 1 - tail)),
        "n": int(n),
    }


@dataclass
class GateReport:
    passed: bool
    checks: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = []
        for name, check in self.checks.items():
            lines.append(f"{'passed' if check['passed'] else 'FAILED'}: {name}: {check['detail']}")
        verdict = "The candidate passed the gate." if self.passed else "The candidate did not pass the gate."
        return " ".join([verdict, *lines])


def evaluate_gate(
    *,
    held_out_candidate,
    held_out_current,
    fact_checks,
    retention_candidate,
    retention_current,
    min_held_out: int = 8,
    retention_ratio: float = 0.95,
) -> GateReport:
    checks = {}
    n = len(held_out_candidate)
    checks["held_out"] = {
        "passed": n >= min_held_out,
        "n": n,
        "detail": f"{n} held-out examples (at least {min_held_out} needed).",
    }
    interval = paired_bootstrap(held_out_candidate, held_out_current)
    improved = interval["low"] is not None and interval["low"] >= 0
    checks["improvement"] = {
        "passed": improved,
        **interval,
        "detail": "no held-out examples."
        if interval["n"] == 0
        else (
            f"per-token log-prob of the held-out targets changed by {interval['mean_delta']:+.3f} "
            f"(95% interval {interval['low']:+.3f} to {interval['high']:+.3f})."
        ),
    }
    missing = [
        {"fact": fact, "answer": answer} for fact, answer in fact_checks if fact.lower().strip() not in answer.lower()
    ]
    checks["facts"] = {
        "passed": not missing,
        "checked": len(fact_checks),
        "missing": missing,
        "detail": f"{len(fact_checks) - len(missing)} of {len(fact_checks)} corrected facts in the greedy answers.",
    }
    candidate_mean = float(np.mean(retention_candidate)) if len(retention_candidate) else None
    current_mean = float(np.mean(retention_current)) if len(retention_current) else None
    retained = candidate_mean is not None and candidate_mean >= current_mean + math.log(retention_ratio)
    ratio = math.exp(candidate_mean - current_mean) if retained or candidate_mean is not None else None
    checks["retention"] = {
        "passed": retained,
        "candidate_mean_logprob": candidate_mean,
        "current_mean_logprob": current_mean,
        "probability_ratio": ratio,
        "detail": "no retention prompts."
        if candidate_mean is None
        else f"unrelated answers keep {ratio:.1%} of their per-token probability (at least {retention_ratio:.0%}).",
    }
    return GateReport(passed=all(check["passed"] for check in checks.values()), checks=checks)
