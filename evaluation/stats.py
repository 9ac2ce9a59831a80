"""Statistics of success rates: Wilson intervals, the two-proportion z test, Fisher's exact test.

Pure Python (``math`` only), exact to double precision for the sample sizes of an evaluation.
"""

from __future__ import annotations

import math

__all__ = ["fisher_exact", "two_proportion_z", "wilson"]

Z95 = 1.959963984540054
"""The two-sided 95% normal quantile."""


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n`` (95% by default); ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """The pooled two-proportion z test of ``s1/n1`` against ``s2/n2``: ``(z, two-sided p)``."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (s1 / n1 - s2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test on the 2x2 table (successes, failures) x (group 1, group 2):
    the probability, given the margins, of a table at most as likely as the one observed."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    total = s1 + s2
    lo, hi = max(0, total - n2), min(total, n1)
    log_denom = _log_comb(n1 + n2, total)

    def log_p(a: int) -> float:
        return _log_comb(n1, a) + _log_comb(n2, total - a) - log_denom

    observed = log_p(s1)
    eps = 1e-7
    p = sum(math.exp(log_p(a)) for a in range(lo, hi + 1) if log_p(a) <= observed + eps)
    return min(1.0, p)
