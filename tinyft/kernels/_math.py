"""Vectorizable tanh, erf and exp for the float32 kernels (Numba's math.tanh / erf / exp are scalar libm calls).

Map of this file:
  as_type(value, like)     a constant as a scalar of like's dtype, so float32 loops stay in float32
  tanh(u, like)            float32 `like`: a rational approximation (Eigen's, in float32), else libm's tanh
  erf(u, like)             float32 `like`: a rational approximation (Eigen's, in float32; error < 6 float32 ulp,
                           3.6e-7 absolute, measured against float64 math.erf on [-5, 5]), else libm's erf
  exp_nonpositive(u, like) exp(u) for u <= 0; float32 `like`: 2^k exp(r) in float32, exp(r) by Cephes'
                           polynomial, 2^k written into the exponent bits (float32_from_bits); relative
                           error < 3.1e-7 on [-87.3, 0], measured against float64 exp; else libm's exp
  float32_from_bits(bits)  an int32 bit pattern read as a float32 (compiled: one LLVM bitcast)
`like` is any array of the kernel's dtype; only its dtype matters. Compiled, an @overload picks one
formula per dtype while the kernel is typed, so no branch is left in the loop to stop vectorization.
Under NUMBA_DISABLE_JIT=1 the plain Python bodies below run instead (same formulas, same choice).
Caution: Numba's cache only watches the file that defines a kernel, so after editing this file delete
tinyft/kernels/__pycache__ (or the NUMBA_CACHE_DIR folder) or the kernels keep the old formulas.
Why: a loop calling libm's expf, tanhf or erff does one element at a time (~4, ~15 and ~6 ns each here); these
polynomials are plain multiply-adds, which LLVM turns into 16-wide float32 vector code (0.2 ns per exp
here, measured; the float64 squaring formula used before took about three times as long).
"""

import math

import numba
import numpy as np
from numba import types
from llvmlite import ir
from numba.extending import intrinsic, overload

from ._backend import njit

F32 = np.float32
TANH_CLAMP = F32(7.90531110763549805)  # the rational approximation's fitted range
TANH_ONE = F32(9.1)  # from here on float32 tanh(u) rounds to exactly +-1
# Eigen's float32 tanh: an odd degree-13 numerator over an even degree-6 denominator, in float32 throughout
# (float32 constants keep the arithmetic in float32: 16 lanes per AVX-512 vector instead of float64's 8).
P13, P11, P9, P7, P5, P3, P1 = (F32(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                                                 5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                                                 4.89352455891786e-03))
Q6, Q4, Q2, Q0 = (F32(c) for c in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                   4.89352518554385e-03))


def _tanh_rational(x):
    if abs(x) >= TANH_ONE:  # float32's own tanh is exactly +-1 here; keeping 1 - t^2 = 0 keeps GELU's tail exact
        return math.copysign(F32(1.0), x)  # (a select, not a jump, after compilation: the loop still vectorizes)
    u = min(max(x, -TANH_CLAMP), TANH_CLAMP)
    u2 = u * u
    p = u2 * P13 + P11  # numerator / u, Horner in u^2
    p = u2 * p + P9
    p = u2 * p + P7
    p = u2 * p + P5
    p = u2 * p + P3
    p = u2 * p + P1
    q = u2 * Q6 + Q4  # denominator
    q = u2 * q + Q2
    q = u2 * q + Q0
    return u * p / q


def _tanh_exact(u):
    return math.tanh(u)


ERF_ONE = F32(3.832506856900711)  # erfinv(1 - 2^-23): from here on float32 erf(u) is +-1
# Eigen's float32 erf: an odd degree-9 numerator over an even degree-12 denominator, in float32 throughout.
R9, R7, R5, R3, R1 = (F32(c) for c in (2.2905065861350646e-04, 3.4082910107109506e-03, 5.0955695062380861e-02,
                                       1.8520832239976145e-01, 1.1283791435190840e+00))
S12, S10, S8, S6, S4, S2, S0 = (F32(c) for c in (-1.1791602954361697e-07, 2.3547966471313185e-05,
                                                 1.0179625278914885e-03, 1.4070470171167667e-02,
                                                 1.1098505178285362e-01, 4.9746925110067538e-01, 1.0))


def _erf_rational(u):
    if abs(u) >= ERF_ONE:
        return math.copysign(F32(1.0), u)  # a select after compilation, as in _tanh_rational
    u2 = u * u
    p = u2 * R9 + R7  # numerator / u, Horner in u^2
    p = u2 * p + R5
    p = u2 * p + R3
    p = u2 * p + R1
    q = u2 * S12 + S10  # denominator
    q = u2 * q + S8
    q = u2 * q + S6
    q = u2 * q + S4
    q = u2 * q + S2
    q = u2 * q + S0
    return min(max(u * p / q, F32(-1.0)), F32(1.0))  # from |u| = 3.67 on, p / q rounds 1 ulp above 1


def _erf_exact(u):
    return math.erf(u)


EXP_LOW = F32(-87.33)  # exp(-87.33) ~ 1.2e-38, float32's smallest normal number: lower inputs return about that
LOG2E = F32(1.4426950408889634)
LN2_HI, LN2_LO = F32(0.693359375), F32(-2.12194440e-4)  # ln 2 = LN2_HI + LN2_LO; LN2_HI has 9 bits, so k * LN2_HI is exact
E5, E4, E3, E2, E1, E0 = (F32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                           1.6666665459e-1, 5.0000001201e-1))  # Cephes' expf polynomial


def float32_from_bits(bits):
    """The float32 whose IEEE-754 bit pattern is the int32 `bits` (a reinterpretation, no arithmetic)."""
    return np.array([bits], dtype=np.int32).view(np.float32)[0]


def _exp_float32(u):
    """exp(u) for u <= 0 in float32: u = k ln2 + r with k an integer and |r| <= ln2 / 2, then
    exp(u) = 2^k exp(r): exp(r) by a degree-7 polynomial, 2^k by writing k + 127 into the exponent bits."""
    x = max(u, EXP_LOW)
    k = F32(np.int32(x * LOG2E - F32(0.5)))  # nearest integer to x / ln2 (-126..0): int32() cuts toward 0,
    #                                             which for these negative numbers is rounding up
    r = (x - k * LN2_HI) - k * LN2_LO  # Cody and Waite's two-step reduction keeps r accurate
    p = r * E5 + E4
    p = r * p + E3
    p = r * p + E2
    p = r * p + E1
    p = r * p + E0
    p = p * r * r + r + F32(1.0)
    two_k = float32_from_bits(np.int32((k + F32(127.0)) * F32(8388608.0)))  # bits (k + 127) << 23 are 2^k
    return p * two_k


def _exp_exact(u):
    return math.exp(u)


def as_type(value, like):
    """value as a scalar of like's dtype: kernels cast their constants once, so float32 data is computed in
    float32 (a Python float constant would make every product float64)."""
    return like.dtype.type(value)


def tanh(u, like):
    return _tanh_rational(u) if like.dtype == np.float32 else _tanh_exact(u)


def erf(u, like):
    return _erf_rational(u) if like.dtype == np.float32 else _erf_exact(u)


def exp_nonpositive(u, like):
    return _exp_float32(u) if like.dtype == np.float32 else _exp_exact(u)


if not numba.config.DISABLE_JIT:
    _tanh_rational_jit = njit(inline="always")(_tanh_rational)
    _tanh_exact_jit = njit(inline="always")(_tanh_exact)

    @intrinsic
    def _float32_from_bits_typed(typingctx, bits):
        if bits != types.int32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    @overload(float32_from_bits, inline="always")
    def _float32_from_bits_overload(bits):
        return lambda bits: _float32_from_bits_typed(bits)

    _erf_rational_jit = njit(inline="always")(_erf_rational)
    _erf_exact_jit = njit(inline="always")(_erf_exact)
    _exp_float32_jit = njit(inline="always")(_exp_float32)
    _exp_exact_jit = njit(inline="always")(_exp_exact)

    @overload(as_type, inline="always")
    def _as_type_typed(value, like):
        if like.dtype == types.float32:
            return lambda value, like: np.float32(value)
        return lambda value, like: np.float64(value)

    @overload(tanh, inline="always")
    def _tanh_typed(u, like):
        if like.dtype == types.float32:
            return lambda u, like: _tanh_rational_jit(u)
        return lambda u, like: _tanh_exact_jit(u)

    @overload(erf, inline="always")
    def _erf_typed(u, like):
        if like.dtype == types.float32:
            return lambda u, like: _erf_rational_jit(u)
        return lambda u, like: _erf_exact_jit(u)

    @overload(exp_nonpositive, inline="always")
    def _exp_typed(u, like):
        if like.dtype == types.float32:
            return lambda u, like: _exp_float32_jit(u)
        return lambda u, like: _exp_exact_jit(u)
