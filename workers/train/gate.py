"""The validation gate's statistics: is a candidate adapter version at least as good as the
current one? Plain numpy, no Django; the training job computes the inputs and stores the report.

Checks (a candidate is promoted only when all pass, or when an admin approves it anyway):

held_out
    Enough held-out examples to judge by: at least `min_held_out` (8). Fewer fails the gate
    with that reason, whatever the other checks say.
improvement
    Per-token log-probability of the held-out targets is not worse: the lower bound of a paired
    bootstrap interval (95%) of the mean candidate − current difference is at least 0. Paired,
    because examples differ far more from each other than the two versions differ on one.
facts
    Where a held-out example is a correction, the candidate's greedy answer contains the corrected
    fact: case-insensitive, whitespace collapsed, the fact's own surrounding punctuation ignored
    (a fact "Ada Lumen maintains it." is found in "ada lumen maintains it!"). No corrections to
    check passes: the check applies where there is one.
retention
    On a fixed set of unrelated prompts (`retention_prompts()`), the current version's own answers
    keep at least `retention_ratio` (0.95) of their per-token probability under the candidate:

        exp(mean log p_candidate) >= 0.95 * exp(mean log p_current)
        <=> mean log p_candidate >= mean log p_current + log(0.95)   (a drop of at most 0.0513 nats)

    where each value is an answer's mean per-token log-probability and the mean is over prompts.
    Log-probabilities are negative, so "0.95 of its value" applied to them directly would either
    demand an improvement (0.95 x a negative number is larger) or, read as 1/0.95, allow a drop
    that grows with how unsure the current version already was (0.005 nats on a confident answer,
    0.16 on an unsure one). A ratio of per-token probabilities (geometric means) is the quantity
    that "stays at 95% of its value" and allows the same relative loss whatever the starting level.

The report is plain JSON (finite floats, no NaN) and keeps every number a check was judged by.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

RETENTION_PROMPTS_FILE = Path(__file__).resolve().with_name("retention_prompts.v1.json")

# Bounds the bootstrap's index matrix (resamples x n) to about 32 MiB of int64 at a time.
_BOOTSTRAP_CELLS_PER_CHUNK = 1 << 22
_EXCERPT_CHARS = 80


@cache
def _retention_file() -> dict:
    data = json.loads(RETENTION_PROMPTS_FILE.read_text())
    return {"version": str(data["version"]), "prompts": tuple(str(p) for p in data["prompts"])}


def retention_prompts() -> list[str]:
    """The fixed, versioned set of 50 unrelated prompts the retention check asks."""
    return list(_retention_file()["prompts"])


def retention_prompts_version() -> str:
    """The version string of `retention_prompts()` ("retention-v1"); a new set gets a new file."""
    return _retention_file()["version"]


def paired_bootstrap(candidate, current, *, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of candidate − current over paired values, and its bootstrap percentile interval.

    Returns {"mean_delta", "low", "high", "n"}; with no pairs the three numbers are None.
    The same inputs and seed give the same interval.
    """
    candidate_values = _finite_vector(candidate, "candidate")
    current_values = _finite_vector(current, "current")
    if candidate_values.size != current_values.size:
        raise ValueError(
            f"paired values differ in length: {candidate_values.size} candidate, {current_values.size} current"
        )
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, not {confidence}")
    deltas = candidate_values - current_values
    n = int(deltas.size)
    if n == 0:
        return {"mean_delta": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CELLS_PER_CHUNK // n)
    means = np.concatenate(
        [
            deltas[rng.integers(0, n, size=(min(rows_per_chunk, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, rows_per_chunk)
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean_delta": float(deltas.mean()), "low": float(low), "high": float(high), "n": n}


@dataclass
class GateReport:
    """The gate's verdict and, per check, whether it passed, the numbers it was judged by and
    a sentence (`detail`) saying so. `checks` keeps the order held_out, improvement, facts,
    retention."""

    passed: bool
    checks: dict[str, dict] = field(default_factory=dict)
    retention_set: str | None = None

    @property
    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check["passed"]]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "retention_set": self.retention_set,
            "checks": json.loads(json.dumps(self.checks, allow_nan=False)),
        }

    def summary(self) -> str:
        total = len(self.checks)
        if self.passed:
            verdict = f"The candidate passed the gate: all {total} checks passed."
        else:
            failed = self.failed
            verdict = (
                f"The candidate did not pass the gate: {len(failed)} of {total} checks failed ({', '.join(failed)})."
            )
        lines = [verdict]
        for name, check in self.checks.items():
            lines.append(f"{'Passed' if check['passed'] else 'FAILED'} {name}: {check['detail']}")
        return "\n".join(lines)


def evaluate_gate(
    *,
    held_out_candidate,
    held_out_current,
    fact_checks,
    retention_candidate,
    retention_current,
    min_held_out: int = 8,
    retention_ratio: float = 0.95,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    retention_set: str | None = None,
) -> GateReport:
    """Judge a candidate version against the current one.

    held_out_candidate / held_out_current: each held-out example's mean per-token log-probability
    of its target under the candidate and under the current version, in the same order
    (`target_logprobs`). fact_checks: (expected fact, candidate's greedy answer) per correction.
    retention_candidate / retention_current: the same statistic for the current version's own
    answers to the retention prompts. retention_set: the prompts' version, recorded in the report.
    """
    if not 0 < retention_ratio <= 1:
        raise ValueError(f"retention_ratio must lie in (0, 1], not {retention_ratio}")
    checks = {
        "held_out": _held_out_check(len(held_out_candidate), min_held_out),
        "improvement": _improvement_check(
            held_out_candidate, held_out_current, confidence=confidence, resamples=resamples, seed=seed
        ),
        "facts": _facts_check(fact_checks),
        "retention": _retention_check(retention_candidate, retention_current, retention_ratio),
    }
    return GateReport(
        passed=all(check["passed"] for check in checks.values()), checks=checks, retention_set=retention_set
    )


def _held_out_check(n: int, min_held_out: int) -> dict:
    enough = n >= min_held_out
    detail = (
        f"{n} held-out examples, enough to judge by (at least {min_held_out} needed)."
        if enough
        else f"only {n} held-out examples; at least {min_held_out} are needed to judge the candidate."
    )
    return {"passed": enough, "n": n, "min_held_out": min_held_out, "detail": detail}


def _improvement_check(candidate, current, *, confidence: float, resamples: int, seed: int) -> dict:
    interval = paired_bootstrap(candidate, current, resamples=resamples, confidence=confidence, seed=seed)
    level = f"{confidence:.0%}"
    if interval["n"] == 0:
        return {"passed": False, **interval, "confidence": confidence, "detail": "no held-out examples to compare."}
    improved = interval["low"] >= 0
    if improved:
        verdict = "not worse, since the lower bound is at least 0."
    elif interval["high"] < 0:
        verdict = "worse: the whole interval lies below 0."
    else:
        verdict = "possibly worse: the lower bound is below 0."
    delta = interval["mean_delta"]
    change = "did not change" if delta == 0 else f"{'rose' if delta > 0 else 'fell'} by {abs(delta):.3f} nats"
    detail = (
        f"the held-out targets' per-token log-probability {change} on average over {interval['n']} examples "
        f"({level} interval {interval['low']:+.3f} to {interval['high']:+.3f}); {verdict}"
    )
    return {"passed": improved, **interval, "confidence": confidence, "detail": detail}


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


_SURROUNDING_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def _facts_check(fact_checks) -> dict:
    checked, missing, ignored_blank = 0, [], 0
    for fact, answer in fact_checks:
        expected = _SURROUNDING_PUNCTUATION.sub("", _normalised(fact))
        if not expected:
            ignored_blank += 1
            continue
        checked += 1
        if expected not in _normalised(answer or ""):
            missing.append({"fact": fact, "answer": answer or ""})
    found = checked - len(missing)
    if checked == 0:
        detail = "no corrected facts to check."
    elif not missing:
        detail = (
            "the corrected fact appears in the candidate's greedy answer."
            if checked == 1
            else f"all {checked} corrected facts appear in the candidate's greedy answers."
        )
    else:
        first = missing[0]
        detail = (
            f"{found} of {checked} corrected facts appear in the candidate's greedy answers; "
            f"{'' if checked == 1 else 'for example '}"
            f"{_excerpt(first['fact'])!r} is missing from {_excerpt(first['answer'])!r}."
        )
    return {
        "passed": not missing,
        "checked": checked,
        "found": found,
        "missing": missing,
        "ignored_blank": ignored_blank,
        "detail": detail,
    }


def _retention_check(candidate, current, ratio_needed: float) -> dict:
    candidate_values = _finite_vector(candidate, "retention_candidate")
    current_values = _finite_vector(current, "retention_current")
    if candidate_values.size != current_values.size:
        raise ValueError(
            f"retention values differ in length: {candidate_values.size} candidate, {current_values.size} current"
        )
    n = int(candidate_values.size)
    if n == 0:
        return {
            "passed": False,
            "n": 0,
            "ratio_needed": ratio_needed,
            "candidate_mean_logprob": None,
            "current_mean_logprob": None,
            "mean_delta": None,
            "probability_ratio": None,
            "prompts_below_ratio": 0,
            "worst_prompt_ratio": None,
            "detail": "no retention answers to compare; retention cannot be shown.",
        }
    candidate_mean, current_mean = float(candidate_values.mean()), float(current_values.mean())
    delta = candidate_mean - current_mean
    retained = delta >= math.log(ratio_needed)
    per_prompt = np.exp(candidate_values - current_values)
    ratio = math.exp(delta)
    below = int((per_prompt < ratio_needed).sum())
    detail = (
        f"on {n} unrelated prompts the current answers keep {ratio:.1%} of their per-token probability "
        f"under the candidate (at least {ratio_needed:.0%} needed); {below} of {n} prompts fell below "
        f"{ratio_needed:.0%} on their own, the worst to {float(per_prompt.min()):.1%}."
    )
    return {
        "passed": retained,
        "n": n,
        "ratio_needed": ratio_needed,
        "candidate_mean_logprob": candidate_mean,
        "current_mean_logprob": current_mean,
        "mean_delta": delta,
        "probability_ratio": ratio,
        "prompts_below_ratio": below,
        "worst_prompt_ratio": float(per_prompt.min()),
        "detail": detail,
    }


def _finite_vector(values, name: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a value that is not a finite number")
    return array


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"
