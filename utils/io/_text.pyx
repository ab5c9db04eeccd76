# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Rows of numbers as text without holding the interpreter lock (`utils.io.text.format_rows`).

Python's ``(row * n) % tuple(values)`` holds the lock for the whole string: a worker thread writing
an OBJ that way stalls every torch call of the main thread for as long (a 26,000-vertex mesh took
the whole head's 0.3 s to 11 s beside such a thread). C's ``snprintf`` gives the same characters for
finite doubles (both round correctly), and runs here with the lock released.

The mesh writers' conversions, ``%.Pf`` and ``%.Pg`` with P <= 9, take a shorter road (about 5x
faster than snprintf, whose exact decimal conversion is the cost of writing an OBJ): the number
times a power of ten in 64-bit-mantissa ``long double`` (exact powers up to 10^27, one rounding),
rounded to an integer whose digits are then laid out as C lays them out. The product is within
about 1e-11 of the exact one, so the rounding is the correctly rounded one wherever the fraction is
not within 1e-6 of a half; there (a tie or nearly), and outside the exponents covered, the number
goes to ``snprintf``. Other conversions go to ``snprintf`` whole.
"""

from libc.float cimport LDBL_MANT_DIG
from libc.math cimport frexp, signbit
from libc.stdio cimport snprintf
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef enum:
    _WIDTH = 330  # characters one formatted double can take at most ("%.8f" of 1e308 is 318 long)
    _MAX_COLS = 6
    _MAX_FAST_PRECISION = 9
    _MAX_POWER = 27  # 10^27 = 2^27 5^27 is exact in long double (5^27 < 2^64)

cdef long double _MAX_SCALED = 1099511627776.0  # 2^40: the product's error is below 2^-24 there
cdef long double _MARGIN = 1e-6  # a scaled value this close to a tie or a power of ten goes to snprintf
#: The short road needs a 64-bit mantissa (x87 extended; quad precision is fine too).
cdef bint _LONG_DOUBLE_OK = LDBL_MANT_DIG >= 64
cdef long double _POWERS[_MAX_POWER + 1]
cdef int _i
_POWERS[0] = 1.0
for _i in range(1, _MAX_POWER + 1):
    _POWERS[_i] = _POWERS[_i - 1] * 10


cdef inline bint _scaled(double x, int k, long double* scaled) noexcept nogil:
    """``scaled`` = x 10^k for x >= 0, within 2^-24 (False where |k| > 27 or it is 2^40 or more)."""
    if k > _MAX_POWER or k < -_MAX_POWER:
        return False
    scaled[0] = (<long double> x) * _POWERS[k] if k >= 0 else (<long double> x) / _POWERS[-k]
    return scaled[0] < _MAX_SCALED  # beyond it the product's error could reach the margin below


cdef inline bint _rounded(long double scaled, unsigned long long* n) noexcept nogil:
    """``n`` = the integer nearest ``scaled`` (False where it is within the margin of a tie)."""
    cdef long double whole = <long double> (<unsigned long long> scaled)
    cdef long double fraction = scaled - whole
    if fraction > 0.5 - _MARGIN and fraction < 0.5 + _MARGIN:
        return False
    n[0] = <unsigned long long> whole + (1 if fraction > 0.5 else 0)
    return True


cdef char _PAIRS[200]  # "00" to "99"
for _i in range(100):
    _PAIRS[2 * _i] = 48 + _i // 10
    _PAIRS[2 * _i + 1] = 48 + _i % 10


cdef inline int _digits(unsigned long long n, char* out) noexcept nogil:
    """The decimal digits of ``n`` (at least one) into ``out``, two at a time; returns their count."""
    cdef char tmp[24]
    cdef int at = 24, pair
    while n >= 100:
        pair = <int> (n % 100)
        n //= 100
        at -= 2
        tmp[at] = _PAIRS[2 * pair]
        tmp[at + 1] = _PAIRS[2 * pair + 1]
    if n >= 10:
        at -= 2
        tmp[at] = _PAIRS[2 * n]
        tmp[at + 1] = _PAIRS[2 * n + 1]
    else:
        at -= 1
        tmp[at] = <char> (48 + n)
    memcpy(out, tmp + at, 24 - at)
    return 24 - at


cdef int _fixed(double v, int p, char* out) noexcept nogil:
    """``"%.<p>f" % v`` into ``out``; its length, or -1 where snprintf must do it."""
    cdef unsigned long long n
    cdef long double scaled
    cdef char digits[24]
    cdef int count, used = 0, i, lead
    cdef double x = -v if v < 0 else v
    if not (_scaled(x, p, &scaled) and _rounded(scaled, &n)):
        return -1
    if signbit(v):  # C keeps the sign of -0.0 and of what rounds to zero
        out[0] = b'-'
        used = 1
    count = _digits(n, digits)
    if count <= p:  # an integer part of 0, then zeros after the point
        out[used] = b'0'
        used += 1
        if p > 0:
            out[used] = b'.'
            used += 1
            for i in range(p - count):
                out[used] = b'0'
                used += 1
            memcpy(out + used, digits, count)
            used += count
        return used
    lead = count - p
    memcpy(out + used, digits, lead)
    used += lead
    if p > 0:
        out[used] = b'.'
        used += 1
        memcpy(out + used, digits + lead, p)
        used += p
    return used


cdef int _general(double v, int p, char* out) noexcept nogil:
    """``"%.<p>g" % v`` into ``out`` (1 <= p <= 9); its length, or -1 where snprintf must do it."""
    cdef unsigned long long n
    cdef long double scaled, low, high
    cdef char digits[24]
    cdef int used = 0, e, keep, i
    cdef double x = -v if v < 0 else v
    if signbit(v):
        out[0] = b'-'
        used = 1
    if x == 0:
        out[used] = b'0'
        return used + 1
    low = _POWERS[p - 1]
    high = _POWERS[p]
    # x's decimal exponent e (10^e <= x < 10^(e + 1)): estimated from its binary one, checked on the
    # scaled value (one off is corrected; where it is not certain, snprintf).
    frexp(x, &e)  # x = m 2^e with m in [0.5, 1): floor(log10(x)) is floor((e - 1) log10(2)) or one more
    e = ((e - 1) * 78913) >> 18
    if not _scaled(x, p - 1 - e, &scaled):
        return -1
    if scaled < low or scaled >= high:
        e += -1 if scaled < low else 1
        if not _scaled(x, p - 1 - e, &scaled):
            return -1
    if scaled < low + _MARGIN or scaled > high - _MARGIN or not _rounded(scaled, &n):
        return -1
    if n == <unsigned long long> high:  # rounded up to the next power of ten
        n = <unsigned long long> low
        e += 1
    _digits(n, digits)
    keep = p
    while keep > 1 and digits[keep - 1] == b'0':
        keep -= 1
    if -4 <= e < p:  # C's style f, trailing zeros removed
        if e >= 0:
            memcpy(out + used, digits, e + 1)
            used += e + 1
            if keep > e + 1:
                out[used] = b'.'
                used += 1
                memcpy(out + used, digits + e + 1, keep - e - 1)
                used += keep - e - 1
        else:
            out[used] = b'0'
            out[used + 1] = b'.'
            used += 2
            for i in range(-e - 1):
                out[used] = b'0'
                used += 1
            memcpy(out + used, digits, keep)
            used += keep
        return used
    out[used] = digits[0]  # style e: d[.ddd]e+XX
    used += 1
    if keep > 1:
        out[used] = b'.'
        used += 1
        memcpy(out + used, digits + 1, keep - 1)
        used += keep - 1
    out[used] = b'e'
    out[used + 1] = b'-' if e < 0 else b'+'
    used += 2
    if e < 0:
        e = -e
    if e < 10:
        out[used] = b'0'
        used += 1
    return used + _digits(<unsigned long long> e, out + used)


def format_rows(const double[:, ::1] values, bytes row, object pieces=None, bint fast=True):
    """``(row * len(values)) % tuple(values.ravel())`` for a ``row`` with one conversion per column
    (1 to 6 columns), formatted by C.

    Args:
        values: (N, C) float64, finite (the caller checks).
        row: one row's printf format, e.g. ``b"v %.8g %.8g %.8g\\n"``.
        pieces: the row split for the short road (`utils.io.text`): C + 1 literal texts (bytes, no
            ``%``) and C (kind ``b"f"`` or ``b"g"``, precision) pairs; None: snprintf for every row.
        fast: False sends every number to snprintf (the tests' reference).

    Returns:
        The N rows as bytes.
    """
    cdef Py_ssize_t n = values.shape[0], cols = values.shape[1], i
    if cols < 1 or cols > _MAX_COLS:
        raise ValueError(f"format_rows: 1 to 6 columns, got {cols}")
    cdef const char* fmt = row
    cdef Py_ssize_t per_row = len(row) + cols * _WIDTH
    cdef char* buffer = <char*> malloc(per_row * n + 1)
    if buffer == NULL:
        raise MemoryError()
    cdef Py_ssize_t used = 0
    cdef int written = 0, c, length
    cdef bint short_road = pieces is not None
    fast = fast and _LONG_DOUBLE_OK
    cdef const char* literal[_MAX_COLS + 1]
    cdef int literal_length[_MAX_COLS + 1]
    cdef char kind[_MAX_COLS]
    cdef int precision[_MAX_COLS]
    cdef char single[_MAX_COLS][8]
    if short_road:
        texts, conversions = pieces
        if len(texts) != cols + 1 or len(conversions) != cols:
            free(buffer)
            raise ValueError("format_rows: pieces do not fit the columns")
        for c in range(cols + 1):
            literal[c] = <const char*> texts[c]
            literal_length[c] = len(texts[c])
        for c in range(cols):
            kind[c] = ord(conversions[c][0])
            precision[c] = int(conversions[c][1])
            if not ((kind[c] == b'f' and 0 <= precision[c] <= _MAX_FAST_PRECISION)
                    or (kind[c] == b'g' and 1 <= precision[c] <= _MAX_FAST_PRECISION)):
                free(buffer)
                raise ValueError(f"format_rows: no short road for %.{precision[c]}{chr(kind[c])}")
            snprintf(single[c], 8, b"%%.%d%c", precision[c], kind[c])
    try:
        with nogil:
            if short_road:
                for i in range(n):
                    for c in range(cols):
                        memcpy(buffer + used, literal[c], literal_length[c])
                        used += literal_length[c]
                        length = -1
                        if fast:
                            if kind[c] == b'g':
                                length = _general(values[i, c], precision[c], buffer + used)
                            else:
                                length = _fixed(values[i, c], precision[c], buffer + used)
                        if length < 0:
                            length = snprintf(buffer + used, _WIDTH, single[c], values[i, c])
                            if length < 0 or length >= _WIDTH:
                                written = -1
                                break
                        used += length
                    if written < 0:
                        break
                    memcpy(buffer + used, literal[cols], literal_length[cols])
                    used += literal_length[cols]
            else:
                for i in range(n):
                    if cols == 1:
                        written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0])
                    elif cols == 2:
                        written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1])
                    elif cols == 3:
                        written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1],
                                           values[i, 2])
                    elif cols == 4:
                        written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1],
                                           values[i, 2], values[i, 3])
                    elif cols == 5:
                        written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1],
                                           values[i, 2], values[i, 3], values[i, 4])
                    else:
                        written = snprintf(buffer + used, per_row + 1, fmt, values[i, 0], values[i, 1],
                                           values[i, 2], values[i, 3], values[i, 4], values[i, 5])
                    if written < 0 or written > per_row:
                        break
                    used += written
        if written < 0 or written > per_row:
            raise ValueError(f"format_rows: row {i} does not fit the format {row!r}")
        return buffer[:used]
    finally:
        free(buffer)
