"""Statistics of the report: the mean and the 95% confidence interval of the mean, without SciPy.

Each result is one sample (results of the same case with other prompts or seeds are not independent, so
the interval is optimistic when a case has several). The 95% interval is ``mean ± t(0.975, n - 1) · s /
sqrt(n)`` with the sample standard deviation ``s``; with n = 1 there is no interval ("n/a").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..errors import InputError

CI_LEVEL = 0.95


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1 (closed-form finite series, A&S 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 1) // 2):  # terms 2/3 c^2, (2*4)/(3*5) c^4, ...
            term *= (2.0 * k) / (2.0 * k + 1.0) * c2
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):  # terms 1/2 c^2, (1*3)/(2*4) c^4, ...
        term *= (2.0 * k - 1.0) / (2.0 * k) * c2
        total += term
    return math.sin(theta) * total


def t_critical(df: int, level: float = CI_LEVEL) -> float:
    """Two-sided critical value of Student's t: P(|T| <= t) = ``level`` (12.706 for df = 1 at 95%).

    Computed by bisection on the exact distribution function, so no table or SciPy is needed. Above
    10,000 degrees of freedom the value for 10,000 is returned (within 3e-4 of the limit, 1.95996).
    """
    if df < 1:
        raise InputError(f"degrees of freedom must be >= 1, got {df}")
    if not 0.0 < level < 1.0:
        raise InputError(f"level must be in (0, 1), got {level}")
    if df > 10_000:
        df = 10_000
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < level:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def summarize(values: Iterable[float]) -> dict:
    """n, mean, sample std and the 95% t interval of the mean (``None`` where undefined)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95_half": None, "ci95_low": None, "ci95_high": None}
    mean = math.fsum(vals) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95_half": None, "ci95_low": None, "ci95_high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_critical(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_half": half, "ci95_low": mean - half, "ci95_high": mean + half}
