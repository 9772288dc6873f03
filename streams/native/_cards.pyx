# Compiled twin of the card state and card features; see streams/native/__init__.py.
#
# NativeCard           <->  streams.tables.TableCard (models.features.CardState + p/o)
# featurize_and_learn  <->  streams.tables.featurize_and_learn_batch
#
# The same arithmetic as models.features.card_state, operation for operation: window sums
# are exact integers of 2**-64 (here in 128 bits), converted to double once, then scaled
# and divided as Python does, so every feature is the same double (tests hold them
# bit-equal, tests/unit/test_native_cards.py). A card whose amounts could overflow 128
# bits (any amount >= 2**40, or 2**22 entries) continues in an exact Python CardState.


cdef extern from *:
    """
    #ifndef RS_SOURCE_SHA
    #define RS_SOURCE_SHA "unknown"
    #endif
    """
    const char* RS_SOURCE_SHA

#: sha256 of the kernels' sources this module was compiled from (see streams/native).
SOURCE_SHA = (<bytes>RS_SOURCE_SHA).decode()

from cpython.list cimport PyList_GET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from libc.stdint cimport int64_t
from libc.string cimport memmove

from models.features.card_state import CardState as _PyCardState

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL
    bint PyLong_CheckExact(object o)

cdef extern from *:
    """
    typedef __int128 rs_i128;
    /* int(a * 2**64) of a double a in [0, 2**40): exact, as Python's int() of the product */
    static inline rs_i128 rs_fixed(double a) { return (rs_i128)(a * 18446744073709551616.0); }
    /* float(x) of Python: the integer rounded once to the nearest double */
    static inline double rs_to_double(rs_i128 x) { return (double)x; }
    """
    ctypedef long long rs_i128  # arithmetic happens in C, on the real 128-bit type
    rs_i128 rs_fixed(double a) nogil
    double rs_to_double(rs_i128 x) nogil

cdef double DAY = 86400.0
cdef double SPAN_1 = 86400.0
cdef double SPAN_7 = 7 * 86400.0
cdef double SPAN_30 = 30 * 86400.0
cdef double HISTORY = 30 * 86400.0  # CARD_HISTORY_SECONDS
cdef double GAP_CAP = 30 * 86400.0  # GAP_CAP_SECONDS
cdef double MEAN_FLOOR = 0.01
cdef double UNSCALE = 5.421010862427522e-20  # 2**-64
cdef double BIG_AMOUNT = 1099511627776.0  # 2**40
cdef Py_ssize_t BIG_COUNT = 1 << 22


def _check_constants(windows, double history, double gap_cap, double mean_floor, double day):
    """Raises if models.features.definitions moved away from the compiled constants."""
    if (tuple(windows) != (1, 7, 30) or history != HISTORY or gap_cap != GAP_CAP
            or mean_floor != MEAN_FLOOR or day != DAY):
        raise ImportError("streams.native._cards was built for other card feature definitions")


cdef inline Py_ssize_t _bisect_right(const double* a, double x, Py_ssize_t lo, Py_ssize_t hi) noexcept:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef class NativeCard:
    """One card's last 30 days of ``(ts, amount)`` in C arrays, with running windows.

    The interface of ``streams.tables.TableCard``: ``learn_one``, :meth:`features`
    (``card_features`` before learning), ``to_dict`` / ``from_dict``, ``len``, and the
    partition/offset of the last transaction applied (``p``, ``o``).
    """

    cdef double* _ts
    cdef double* _amounts
    cdef Py_ssize_t _off, _n, _cap  # entries are _ts[_off:_off + _n]
    cdef bint _built
    cdef double _ref
    cdef Py_ssize_t _i1, _i7, _i30  # window starts, relative to _off
    cdef rs_i128 _f1, _f7, _f30
    cdef bint _has_po
    cdef long long _p, _o
    cdef object _exact  # a Python CardState once amounts are too large for 128 bits

    def __cinit__(self):
        self._ts = NULL
        self._amounts = NULL
        self._off = self._n = self._cap = 0
        self._built = False
        self._has_po = False
        self._exact = None

    def __init__(self, ts=None, amounts=None):
        cdef Py_ssize_t i, n
        ts = [] if ts is None else list(ts)
        amounts = [] if amounts is None else list(amounts)
        n = len(ts)
        if len(amounts) != n:
            raise ValueError("ts and amounts must have the same length")
        self._reserve(n if n > 8 else 8)
        for i in range(n):
            self._ts[i] = float(ts[i])
            self._amounts[i] = float(amounts[i])
            if not self._fits(self._amounts[i]):
                self._to_exact_from(ts, amounts)
                return
        self._n = n
        if n >= BIG_COUNT:
            self._to_exact_from(ts, amounts)

    def __dealloc__(self):
        PyMem_Free(self._ts)
        PyMem_Free(self._amounts)

    cdef inline bint _fits(self, double amount) noexcept:
        return amount < BIG_AMOUNT  # amounts are validated >= 0 and finite

    cdef int _to_exact_from(self, ts, amounts) except -1:
        self._exact = _PyCardState(ts, amounts)
        self._n = 0
        self._off = 0
        self._built = False
        return 0

    cdef int _to_exact(self) except -1:
        return self._to_exact_from(self._ts_list(), self._amounts_list())

    cdef int _reserve(self, Py_ssize_t want) except -1:
        """Room for ``want`` entries from ``_off``; compacts before growing."""
        cdef Py_ssize_t cap
        cdef double* grown
        if self._off + want <= self._cap:
            return 0
        if self._off and want <= self._cap:
            memmove(self._ts, self._ts + self._off, self._n * sizeof(double))
            memmove(self._amounts, self._amounts + self._off, self._n * sizeof(double))
            self._off = 0
            return 0
        cap = self._cap * 2 if self._cap * 2 >= want else want
        if self._off:
            memmove(self._ts, self._ts + self._off, self._n * sizeof(double))
            memmove(self._amounts, self._amounts + self._off, self._n * sizeof(double))
            self._off = 0
        grown = <double*>PyMem_Realloc(self._ts, cap * sizeof(double))
        if grown == NULL:
            raise MemoryError()
        self._ts = grown
        grown = <double*>PyMem_Realloc(self._amounts, cap * sizeof(double))
        if grown == NULL:
            raise MemoryError()
        self._amounts = grown
        self._cap = cap
        return 0

    # --- the running windows (models.features.card_state.CardState) ------------------
    cdef void _rebuild(self, double ref) noexcept:
        cdef const double* t = self._ts + self._off
        cdef const double* a = self._amounts + self._off
        cdef Py_ssize_t n = self._n, i
        cdef Py_ssize_t i1 = _bisect_right(t, ref - SPAN_1, 0, n)
        cdef Py_ssize_t i7 = _bisect_right(t, ref - SPAN_7, 0, i1)
        cdef Py_ssize_t i30 = _bisect_right(t, ref - SPAN_30, 0, i7)
        cdef rs_i128 f = 0
        for i in range(i1, n):
            f += rs_fixed(a[i])
        self._f1 = f
        for i in range(i7, i1):
            f += rs_fixed(a[i])
        self._f7 = f
        for i in range(i30, i7):
            f += rs_fixed(a[i])
        self._f30 = f
        self._i1, self._i7, self._i30 = i1, i7, i30
        self._ref = ref
        self._built = True

    cdef void _advance(self, double ref) noexcept:
        cdef const double* t = self._ts + self._off
        cdef const double* a = self._amounts + self._off
        cdef Py_ssize_t n = self._n, i
        cdef double bound
        i = self._i1
        bound = ref - SPAN_1
        while i < n and t[i] <= bound:
            self._f1 -= rs_fixed(a[i])
            i += 1
        self._i1 = i
        i = self._i7
        bound = ref - SPAN_7
        while i < n and t[i] <= bound:
            self._f7 -= rs_fixed(a[i])
            i += 1
        self._i7 = i
        i = self._i30
        bound = ref - SPAN_30
        while i < n and t[i] <= bound:
            self._f30 -= rs_fixed(a[i])
            i += 1
        self._i30 = i
        self._ref = ref

    cdef int _learn(self, double ts, double amount) except -1:
        cdef Py_ssize_t n = self._n, pos, cut
        cdef double* t
        cdef double* a
        cdef rs_i128 fixed
        if self._exact is None and (not self._fits(amount) or n + 1 >= BIG_COUNT):
            self._to_exact()
        if self._exact is not None:
            self._exact.learn_one(ts, amount)
            return 0
        self._reserve(n + 1)
        t = self._ts + self._off
        a = self._amounts + self._off
        if n == 0 or ts >= t[n - 1]:
            t[n] = ts
            a[n] = amount
            self._n = n + 1
            if self._built:
                if ts >= self._ref:
                    if ts > self._ref:
                        self._advance(ts)
                    fixed = rs_fixed(amount)
                    self._f1 += fixed
                    self._f7 += fixed
                    self._f30 += fixed
                else:
                    self._built = False
        else:  # out of order: after equal timestamps, as if processed last
            pos = _bisect_right(t, ts, 0, n)
            memmove(t + pos + 1, t + pos, (n - pos) * sizeof(double))
            memmove(a + pos + 1, a + pos, (n - pos) * sizeof(double))
            t[pos] = ts
            a[pos] = amount
            self._n = n + 1
            self._built = False
        n = self._n
        cut = _bisect_right(t, t[n - 1] - HISTORY, 0, n)
        if cut:
            self._off += cut
            self._n -= cut
            if self._built:
                self._i1 -= cut
                self._i7 -= cut
                self._i30 -= cut
        return 0

    cdef void _scan(self, double ts, Py_ssize_t* counts, rs_i128* sums, Py_ssize_t* end_out) noexcept:
        cdef const double* t = self._ts + self._off
        cdef const double* a = self._amounts + self._off
        cdef Py_ssize_t end = _bisect_right(t, ts, 0, self._n), start, i, w
        cdef double spans[3]
        cdef rs_i128 f
        spans[0] = SPAN_1
        spans[1] = SPAN_7
        spans[2] = SPAN_30
        for w in range(3):
            start = _bisect_right(t, ts - spans[w], 0, end)
            f = 0
            for i in range(start, end):
                f += rs_fixed(a[i])
            counts[w] = end - start
            sums[w] = f
        end_out[0] = end

    cdef int _features(self, double ts, double amount, double* out) except -1:
        """``card_features(self, ts, amount)`` into ``out[0:8]``."""
        cdef const double* t
        cdef Py_ssize_t end = self._n
        cdef Py_ssize_t counts[3]
        cdef rs_i128 sums[3]
        cdef rs_i128 fixed
        cdef double gap, prev_mean, ratio
        cdef Py_ssize_t w
        if self._exact is not None or not self._fits(amount):
            if self._exact is None:
                return self._features_exact(ts, amount, out)
            return self._features_of(self._exact, ts, amount, out)
        t = self._ts + self._off
        if end and ts >= t[end - 1]:
            if not self._built:
                self._rebuild(ts)
            elif ts > self._ref:
                self._advance(ts)
            if ts < self._ref:
                self._scan(ts, counts, sums, &end)
            else:
                counts[0] = end - self._i1
                counts[1] = end - self._i7
                counts[2] = end - self._i30
                sums[0] = self._f1
                sums[1] = self._f7
                sums[2] = self._f30
            gap = ts - t[end - 1]
            if gap > GAP_CAP:
                gap = GAP_CAP
        elif end:
            self._scan(ts, counts, sums, &end)
            if end:
                gap = ts - t[end - 1]
                if gap > GAP_CAP:
                    gap = GAP_CAP
            else:
                gap = GAP_CAP
        else:
            out[0] = 1.0
            out[1] = amount
            out[2] = 1.0
            out[3] = amount
            out[4] = 1.0
            out[5] = amount
            out[6] = GAP_CAP
            out[7] = 1.0
            return 0
        fixed = rs_fixed(amount)
        if counts[2]:
            prev_mean = rs_to_double(sums[2]) * UNSCALE / <double>counts[2]
            ratio = amount / (prev_mean if prev_mean > MEAN_FLOOR else MEAN_FLOOR)
        else:
            ratio = 1.0
        for w in range(3):
            out[2 * w] = <double>(counts[w] + 1)
            out[2 * w + 1] = rs_to_double(sums[w] + fixed) * UNSCALE / <double>(counts[w] + 1)
        out[6] = gap
        out[7] = ratio
        return 0

    cdef int _features_exact(self, double ts, double amount, double* out) except -1:
        """An amount beyond the 128-bit range, on a card still in C: Python's arithmetic."""
        return self._features_of(_PyCardState(self._ts_list(), self._amounts_list()), ts, amount, out)

    cdef int _features_of(self, state, double ts, double amount, double* out) except -1:
        from models.features.card_state import card_features
        cdef Py_ssize_t i
        values = card_features(state, ts, amount)
        for i in range(8):
            out[i] = values[i]
        return 0

    # --- Python interface -------------------------------------------------------------
    def learn_one(self, double ts, double amount):
        """Record a transaction (after computing its features) and forget old ones."""
        self._learn(ts, amount)

    def features(self, double ts, double amount):
        """The card features of a transaction before ``learn_one(ts, amount)``."""
        cdef double out[8]
        self._features(ts, amount, out)
        return tuple([out[i] for i in range(8)])

    cdef list _ts_list(self):
        return [self._ts[self._off + i] for i in range(self._n)]

    cdef list _amounts_list(self):
        return [self._amounts[self._off + i] for i in range(self._n)]

    @property
    def ts(self):
        """The card's times, oldest first (a copy)."""
        return list(self._exact.ts) if self._exact is not None else self._ts_list()

    @property
    def amounts(self):
        """The card's amounts, in the order of :attr:`ts` (a copy)."""
        return list(self._exact.amounts) if self._exact is not None else self._amounts_list()

    def __len__(self):
        return len(self._exact) if self._exact is not None else self._n

    @property
    def p(self):
        """Partition of the last transaction applied (None: none yet)."""
        return self._p if self._has_po else None

    @property
    def o(self):
        """Offset of the last transaction applied (None: none yet)."""
        return self._o if self._has_po else None

    def set_applied(self, p, o):
        """Record the partition/offset of the last transaction applied (None: forget)."""
        cdef int overflow_p = 0, overflow_o = 0
        if p is None or o is None or not PyLong_CheckExact(p) or not PyLong_CheckExact(o):
            self._has_po = False
            return
        self._p = PyLong_AsLongLongAndOverflow(p, &overflow_p)
        self._o = PyLong_AsLongLongAndOverflow(o, &overflow_o)
        self._has_po = not (overflow_p or overflow_o)

    def to_dict(self):
        """``{"ts": [...], "amounts": [...]}`` (as ``CardState.to_dict``)."""
        return {"ts": self.ts, "amounts": self.amounts}

    def changelog_value(self):
        """The table's changelog value: :meth:`to_dict` plus ``p`` and ``o``."""
        return {"ts": self.ts, "amounts": self.amounts, "p": self.p, "o": self.o}

    @property
    def exact(self):
        """Whether this card continues in Python's arbitrary-precision arithmetic."""
        return self._exact is not None

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("ts") or [], data.get("amounts") or [])


cdef inline int _apply(NativeCard card, object card_id, dict dirty, long long batch,
                       double ts, double amount, long long partition, long long offset) except -1:
    """``CardStates._apply``: learn unless this input offset was applied already."""
    if card._has_po and card._p == partition and offset <= card._o:
        return 0
    card._learn(ts, amount)
    card._has_po = True
    card._p = partition
    card._o = offset
    if PyDict_GetItemWithError(dirty, card_id) == NULL:
        dirty[card_id] = (partition, batch)
    return 1


def featurize_and_learn(dict live, dict dirty, adopt, long long batch, list card_ids,
                        const double[:] ts, const double[:] amounts,
                        const int64_t[:] partitions, const int64_t[:] offsets,
                        double[:, ::1] out, unsigned char[:] learnt):
    """``streams.tables.featurize_and_learn_batch`` over ``NativeCard`` entries.

    For each row: the card (``live``, else ``adopt(card_id)``), its features into
    ``out[i, 0:8]``, then learn (``learnt[i]``), marking it in ``dirty``.
    """
    cdef Py_ssize_t i, n = len(card_ids)
    cdef PyObject* found
    cdef NativeCard card
    if not (ts.shape[0] >= n and amounts.shape[0] >= n and partitions.shape[0] >= n
            and offsets.shape[0] >= n and out.shape[0] >= n and out.shape[1] == 8
            and learnt.shape[0] >= n):
        raise ValueError("featurize_and_learn: columns shorter than card_ids")
    for i in range(n):
        card_id = <object>PyList_GET_ITEM(card_ids, i)
        found = PyDict_GetItemWithError(live, card_id)
        if found == NULL:
            card = adopt(card_id)
        else:
            card = <NativeCard>found
        card._features(ts[i], amounts[i], &out[i, 0])
        learnt[i] = _apply(card, card_id, dirty, batch, ts[i], amounts[i],
                           partitions[i], offsets[i])
