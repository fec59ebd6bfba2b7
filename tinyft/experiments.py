"""experiments: running experiments rather than teaching one idea.

Map of this file:
  1. Seeds and intervals: t_quantile (Student's t, no SciPy), mean_ci, paired_difference, verdict,
     over_seeds, format_estimate. Every conclusion tinyft prints comes from `verdict`.
  2. Choosing on validation: choose_on_validation picks a setting by its validation score alone and
     reports the test score of the one chosen (the test split is never looked at while choosing).
"""

import math

import numpy as np

# ----------------------------------------------------------------------------------------------------
# 1. Seeds and intervals
# ----------------------------------------------------------------------------------------------------
#
# An experiment run with one seed gives one number; the same experiment with another seed gives another.
# With n seeds we report the mean and a 95% confidence interval from Student's t distribution:
#
#     mean +- t_{(1+level)/2, n-1} * s / sqrt(n),      s = the sample standard deviation (ddof=1)
#
# which assumes the per-seed values are independent draws from a roughly normal distribution. For a
# comparison (A against B under the same seeds) the interval is taken over the per-seed differences
# A_i - B_i: the "paired" interval, much narrower than comparing two separate intervals when the seed
# moves A and B together (same data order, same initial adapters).

VERDICTS = ("supported", "not supported", "within noise", "one seed")


def _log_beta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_continued_fraction(a, b, x, max_terms=300, tol=1e-15):
    """The continued fraction of the incomplete beta function, evaluated by Lentz's method.

    I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))), with
    d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d_{2m} = m(b-m) x / ((a+2m-1)(a+2m)).
    It converges fast for x < (a+1)/(a+b+2); the caller uses the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
    otherwise.
    """
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, max_terms + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),          # d_{2m}
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # d_{2m+1}
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < tol:
            break
    return f


def regularized_incomplete_beta(a, b, x):
    """I_x(a, b) = B(x; a, b) / B(a, b) for a, b > 0 and 0 <= x <= 1 (the CDF of a Beta(a, b) variable)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom: for t >= 0 it is 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The t value with P(T <= t) = p (Student's t, df degrees of freedom), found by bisection on t_cdf.

    t_quantile(0.975, 4) = 2.7764...: the multiplier of s/sqrt(n) in a 95% interval from 5 seeds.
    Bisection is slow (about 100 halvings) but plain to read, and exact to float64's last digits.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # grow the bracket: for df = 1 and p = 0.9995 the answer is 636.6
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _check_level(level):
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1 (e.g. 0.95), got {level}")


def _as_values(values, argument="values"):
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{argument} is empty: an interval needs at least one value")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{argument} holds non-finite values ({array.tolist()}): a diverged run has no mean; "
                         "report it as diverged instead")
    return array


def mean_ci(values, level=0.95):
    """(mean, lo, hi): the mean of `values` (one per seed) and its Student's t confidence interval.

    With a single value there is no spread to estimate: lo and hi are NaN, and nothing should print a +-.
    """
    _check_level(level)
    x = _as_values(values)
    n, mean = len(x), float(x.mean())
    if n == 1:
        return mean, float("nan"), float("nan")
    s = float(x.std(ddof=1))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * s / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(a, b, level=0.95):
    """(mean, lo, hi) of a_i - b_i: A against B measured under the same seeds, in the same order."""
    a, b = _as_values(a, "a"), _as_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a paired difference needs one a and one b per seed: got {len(a)} and {len(b)} values")
    return mean_ci(a - b, level)


def verdict(lo, hi, direction=1):
    """The one rule every printed conclusion follows, from an interval on an effect's size.

    The claim says the effect is positive (direction=+1) or negative (direction=-1).
      "supported"      the interval excludes zero on the claimed side
      "not supported"  the interval excludes zero on the other side: the data say the opposite
      "within noise"   the interval contains zero: these seeds cannot tell
      "one seed"       no interval (lo, hi NaN): no verdict from a single run
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 (the claim: the effect is positive) or -1, got {direction!r}")
    if math.isnan(lo) or math.isnan(hi):
        return "one seed"
    if lo > hi:
        raise ValueError(f"an interval needs lo <= hi, got ({lo}, {hi})")
    lo, hi = direction * lo, direction * hi
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return "supported"
    if hi < 0:
        return "not supported"
    return "within noise"


def format_estimate(mean, lo, hi, digits=3):
    """'0.412 [0.371, 0.453]' with an interval, or '0.412' alone when there is none (one seed)."""
    if math.isnan(lo) or math.isnan(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def over_seeds(fn, seeds, log=None):
    """[fn(seed) for seed in seeds], with one line of progress per seed when `log` is given.

    `fn` runs one whole experiment (build data, train, evaluate) from its seed and returns its numbers.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. range(3)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat ({seeds}): each seed must be a different run")
    results = []
    for i, seed in enumerate(seeds):
        if log is not None:
            log(f"seed {seed} ({i + 1}/{len(seeds)})")
        results.append(fn(seed))
    return results


# ----------------------------------------------------------------------------------------------------
# 2. Choosing on validation
# ----------------------------------------------------------------------------------------------------
#
# A knob (a learning rate, EWC's lambda, WiSE-FT's alpha) chosen by its score on the split that is then
# reported flatters the result: the maximum of several noisy test scores is biased upwards. So a choice
# reads only validation scores; the test score of the chosen setting is reported afterwards.


def choose_on_validation(candidates, validation_score, higher_is_better=True):
    """The candidate with the best validation score, and every candidate's score.

    `validation_score(candidate) -> float` must evaluate on a validation split only; nothing here can see
    a test score. Ties go to the earlier candidate (list the cheaper or simpler setting first).
    Returns (best, scores) with scores a list in candidates' order.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates is empty: give at least one setting to choose from")
    scores = [float(validation_score(c)) for c in candidates]
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        raise ValueError(f"every candidate's validation score is non-finite ({scores}): nothing to choose")
    sign = 1.0 if higher_is_better else -1.0
    best = max(finite, key=lambda i: (sign * scores[i], -i))
    return candidates[best], scores
