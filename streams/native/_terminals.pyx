# Compiled twins of the terminal store's per-transaction loops; see
# streams/native/__init__.py.
#
# NativeTerminalCounts <->  streams.terminal_counts.TerminalCounts
# needed_days          <->  streams.terminal_store.needed_days
# stale / expired      <->  TerminalStore._missing / TerminalStore.expired
# rows                 <->  TerminalStore.rows (the features of each row)
# count_rows           <->  TerminalStore.add_transactions
#
# A terminal's counts are per-day arrays with running totals in C; every feature is the
# same integer sums and the same division as ``TerminalCounts.features``
# (tests/unit/test_native_terminals.py).


cdef extern from *:
    """
    #ifndef RS_SOURCE_SHA
    #define RS_SOURCE_SHA "unknown"
    #endif
    """
    const char* RS_SOURCE_SHA

#: sha256 of the kernels' sources this module was compiled from (see streams/native).
SOURCE_SHA = (<bytes>RS_SOURCE_SHA).decode()

from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong, PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.float cimport PyFloat_AsDouble
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

cdef int64_t LABEL_DELAY = 7  # models.features.definitions.LABEL_DELAY_DAYS
cdef long long WINDOWS[3]
WINDOWS[0] = 1
WINDOWS[1] = 7
WINDOWS[2] = 30


def _check_constants(windows, long long label_delay, long long counts_field):
    """Raises if the Python side moved away from what this kernel reads."""
    if tuple(windows) != (1, 7, 30) or label_delay != LABEL_DELAY or counts_field != 3:
        raise ImportError("streams.native._terminals was built for other terminal features")



cdef class NativeTerminalCounts:
    """One terminal's per-day transaction and known-fraud counts, with running totals.

    The interface of ``streams.terminal_counts.TerminalCounts``: ``features(day)``,
    ``set_days``, ``ends_before``, ``prune``, ``span`` and the ``tx`` / ``fraud`` maps.
    Days ``_lo`` to ``_lo + _n - 1`` are held (days without counts are zeros, which add
    nothing to any window), so every window sum is two array reads.
    """

    cdef int64_t _lo
    cdef Py_ssize_t _n
    cdef int64_t* _tx
    cdef int64_t* _fraud
    cdef int64_t* _ctx  # running totals: _ctx[i] = sum of _tx[0..i]
    cdef int64_t* _cfraud

    def __cinit__(self):
        self._lo = 0
        self._n = 0
        self._tx = self._fraud = self._ctx = self._cfraud = NULL

    def __init__(self, tx_by_day, fraud_by_day):
        days = [*tx_by_day, *fraud_by_day]
        if not days:
            return
        lo, hi = min(days), max(days)
        self._alloc(hi - lo + 1)
        self._lo = lo
        for day, count in tx_by_day.items():
            self._tx[day - lo] = count
        for day, count in fraud_by_day.items():
            self._fraud[day - lo] = count
        self._accumulate(0)

    def __dealloc__(self):
        PyMem_Free(self._tx)  # one block holds the four arrays

    cdef int _alloc(self, Py_ssize_t n) except -1:
        """Room for ``n`` days, all zero (the old arrays are freed: callers copy first)."""
        cdef int64_t* block = <int64_t*>PyMem_Malloc(4 * n * sizeof(int64_t) + 1)
        if block == NULL:
            raise MemoryError()
        memset(block, 0, 4 * n * sizeof(int64_t))
        PyMem_Free(self._tx)
        self._tx, self._fraud = block, block + n
        self._ctx, self._cfraud = block + 2 * n, block + 3 * n
        self._n = n
        return 0

    cdef void _accumulate(self, Py_ssize_t start) noexcept:
        """Redo the running totals from day index ``start`` on."""
        cdef Py_ssize_t i
        cdef int64_t t = self._ctx[start - 1] if start > 0 else 0
        cdef int64_t f = self._cfraud[start - 1] if start > 0 else 0
        for i in range(start, self._n):
            t += self._tx[i]
            f += self._fraud[i]
            self._ctx[i] = t
            self._cfraud[i] = f

    cdef int _cover(self, int64_t first, int64_t last) except -1:
        """Widen the held days to include ``first`` .. ``last`` (new days are zeros)."""
        cdef int64_t lo = self._lo, hi = self._lo + self._n - 1
        cdef Py_ssize_t n_old = self._n, shift
        cdef int64_t* old_tx
        cdef int64_t* old_fraud
        if n_old and first >= lo and last <= hi:
            return 0
        if not n_old:
            self._alloc(last - first + 1)
            self._lo = first
            return 0
        if first > lo:
            first = lo
        if last < hi:
            last = hi
        old_tx, old_fraud = self._tx, self._fraud
        self._tx = NULL  # so _alloc does not free it
        try:
            self._alloc(last - first + 1)
        except MemoryError:
            self._tx = old_tx
            raise
        shift = lo - first
        memcpy(self._tx + shift, old_tx, n_old * sizeof(int64_t))
        memcpy(self._fraud + shift, old_fraud, n_old * sizeof(int64_t))
        PyMem_Free(old_tx)
        self._lo = first
        self._accumulate(0)
        return 0

    cdef inline int64_t _through(self, const int64_t* totals, int64_t day) noexcept:
        cdef int64_t i = day - self._lo
        if self._n == 0 or i < 0:
            return 0
        if i >= self._n:
            i = self._n - 1
        return totals[i]

    cdef void _features(self, int64_t day, int64_t label_delay, double* out) noexcept:
        cdef int64_t last = day - label_delay - 1  # every window ends here
        cdef int64_t n_last = self._through(self._ctx, last)
        cdef int64_t f_last = self._through(self._cfraud, last)
        cdef int64_t n_w, f_w
        cdef Py_ssize_t w
        for w in range(3):
            n_w = n_last - self._through(self._ctx, last - WINDOWS[w])
            f_w = f_last - self._through(self._cfraud, last - WINDOWS[w])
            out[2 * w] = <double>n_w
            out[2 * w + 1] = (<double>f_w / <double>n_w) if n_w else 0.0

    def features(self, int64_t day):
        """``(count_1d, risk_1d, count_7d, risk_7d, count_30d, risk_30d)`` on ``day``."""
        cdef double out[6]
        self._features(day, LABEL_DELAY, out)
        return tuple([out[i] for i in range(6)])

    def set_days(self, int64_t first_day, list tx, list fraud):
        """Replace the counts of the consecutive days from ``first_day`` on."""
        cdef Py_ssize_t i, n = max(len(tx), len(fraud)), at
        if not n:
            return
        self._cover(first_day, first_day + n - 1)
        at = first_day - self._lo
        for i in range(n):
            self._tx[at + i] = tx[i] if i < len(tx) else 0
            self._fraud[at + i] = fraud[i] if i < len(fraud) else 0
        self._accumulate(at)

    def ends_before(self, int64_t day):
        """Whether no count is held for ``day`` or later."""
        return self._n == 0 or day > self._lo + self._n - 1

    def prune(self, int64_t oldest):
        """Forget the days before ``oldest`` (no window reads them any more)."""
        cdef Py_ssize_t cut = oldest - self._lo, keep
        cdef int64_t* old_tx
        cdef int64_t* old_fraud
        if cut <= 0 or not self._n:
            return
        if cut >= self._n:
            PyMem_Free(self._tx)
            self._tx = self._fraud = self._ctx = self._cfraud = NULL
            self._n = 0
            self._lo = 0
            return
        keep = self._n - cut
        old_tx, old_fraud = self._tx, self._fraud
        self._tx = NULL
        try:
            self._alloc(keep)
        except MemoryError:
            self._tx = old_tx
            raise
        memcpy(self._tx, old_tx + cut, keep * sizeof(int64_t))
        memcpy(self._fraud, old_fraud + cut, keep * sizeof(int64_t))
        PyMem_Free(old_tx)
        self._lo = oldest
        self._accumulate(0)

    def span(self):
        """Days held (what a long replay's pruning keeps bounded)."""
        return self._n

    @property
    def tx(self):
        """``{day: transactions}`` of the days with any."""
        return {self._lo + i: self._tx[i] for i in range(self._n) if self._tx[i]}

    @property
    def fraud(self):
        """``{day: known frauds}`` of the days with any."""
        return {self._lo + i: self._fraud[i] for i in range(self._n) if self._fraud[i]}


def needed_days(list terminal_ids, const int64_t[:] days):
    """``{terminal: the latest day it is needed on}`` of a batch's rows."""
    cdef dict out = {}
    cdef Py_ssize_t i, n = PyList_GET_SIZE(terminal_ids)
    cdef PyObject* seen
    cdef long long day
    if days.shape[0] < n:
        raise ValueError("needed_days: fewer days than terminals")
    for i in range(n):
        terminal = <object>PyList_GET_ITEM(terminal_ids, i)
        day = days[i]
        seen = PyDict_GetItemWithError(out, terminal)
        if seen == NULL or PyLong_AsLongLong(<object>seen) < day:
            PyDict_SetItem(out, terminal, PyLong_FromLongLong(day))
    return out


cdef inline long long _through(long long first, list totals, Py_ssize_t top, long long day) except? -1:
    """``_Cumulative.through(day)`` of the Python counts."""
    cdef long long i = day - first
    if top < 0 or i < 0:
        return 0
    if i > top:
        i = top
    return PyLong_AsLongLong(<object>PyList_GET_ITEM(totals, <Py_ssize_t>i))


cdef int _python_row(object c, long long day, long long label_delay, double* out) except -1:
    """A row from a Python ``TerminalCounts`` (a store built without the kernels)."""
    cdef long long last, t_first, f_first, n_last, f_last, n_w, f_w
    cdef Py_ssize_t w, t_top, f_top
    cdef list t_totals, f_totals
    tx = c._tx
    fraud = c._fraud
    t_totals = tx.totals
    f_totals = fraud.totals
    t_first = tx.first
    f_first = fraud.first
    t_top = PyList_GET_SIZE(t_totals) - 1
    f_top = PyList_GET_SIZE(f_totals) - 1
    last = day - label_delay - 1
    n_last = _through(t_first, t_totals, t_top, last)
    f_last = _through(f_first, f_totals, f_top, last)
    for w in range(3):
        n_w = n_last - _through(t_first, t_totals, t_top, last - WINDOWS[w])
        f_w = f_last - _through(f_first, f_totals, f_top, last - WINDOWS[w])
        out[2 * w] = <double>n_w
        out[2 * w + 1] = (<double>f_w / <double>n_w) if n_w else 0.0
    return 0


def rows(dict counts, list terminal_ids, const int64_t[:] days, long long label_delay,
         double[:, ::1] out):
    """Terminal features of each row into ``out[i, 0:6]`` (zeros without counts)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(terminal_ids), w
    cdef PyObject* entry
    if days.shape[0] < n or out.shape[0] < n or out.shape[1] != 6:
        raise ValueError("rows: columns shorter than terminal_ids")
    if label_delay != LABEL_DELAY:
        raise ValueError("rows: built for a 7-day label delay")
    for i in range(n):
        entry = PyDict_GetItemWithError(counts, <object>PyList_GET_ITEM(terminal_ids, i))
        if entry == NULL:
            for w in range(6):
                out[i, w] = 0.0
            continue
        c = <object>PyTuple_GET_ITEM(<object>entry, 3)  # _Cached.counts
        if type(c) is NativeTerminalCounts:
            (<NativeTerminalCounts>c)._features(days[i], label_delay, &out[i, 0])
        else:
            _python_row(c, days[i], label_delay, &out[i, 0])
    return None


def stale(dict counts, dict needed):
    """Terminals of ``needed`` (terminal: day) without counts, or with counts fetched on
    an earlier event day than the day they are needed on; sorted."""
    cdef list out = []
    cdef PyObject* entry
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0
    while PyDict_Next(needed, &pos, &key, &value):
        entry = PyDict_GetItemWithError(counts, <object>key)
        if entry == NULL or (<object>PyTuple_GET_ITEM(<object>entry, 1)) < <object>value:
            out.append(<object>key)
    out.sort()
    return out


def expired(dict counts, dict needed, double limit):
    """Terminals of ``needed`` whose counts were fetched at or before ``limit``."""
    cdef list out = []
    cdef PyObject* entry
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0
    while PyDict_Next(needed, &pos, &key, &value):
        entry = PyDict_GetItemWithError(counts, <object>key)
        if entry != NULL and PyFloat_AsDouble(<object>PyTuple_GET_ITEM(<object>entry, 0)) <= limit:
            out.append(<object>key)
    return out


def count_rows(pending, list terminal_ids, const int64_t[:] days,
               const unsigned char[:] learnt):
    """One transaction per learnt row into ``pending[(terminal, day)]`` (a dict, or a
    ``defaultdict``: its default is not used)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(terminal_ids)
    cdef PyObject* seen
    if not isinstance(pending, dict):
        raise TypeError("count_rows: pending must be a dict")
    if days.shape[0] < n or learnt.shape[0] < n:
        raise ValueError("count_rows: columns shorter than terminal_ids")
    for i in range(n):
        if not learnt[i]:
            continue
        pair = (<object>PyList_GET_ITEM(terminal_ids, i), PyLong_FromLongLong(days[i]))
        seen = PyDict_GetItemWithError(pending, pair)
        if seen == NULL:
            PyDict_SetItem(pending, pair, 1)
        else:
            PyDict_SetItem(pending, pair, <object>seen + 1)
    return None


def plan_fetch(dict counts, list terminals, int64_t day, bint full, int64_t label_delay,
               int64_t span_days, str key_prefix):
    """``TerminalStore.fetch``'s split of ``terminals``: those to read whole, and those
    whose missing days to read, with their first and last day and their keys.
    Returns ``(whole, since, firsts, lasts, since_keys)`` (lists)."""
    cdef list whole = [], since = [], firsts = [], lasts = [], keys = []
    cdef PyObject* entry
    cdef int64_t first, last = day - label_delay - 1, fetched_day
    for terminal in terminals:
        entry = NULL if full else PyDict_GetItemWithError(counts, terminal)
        if entry == NULL:
            whole.append(terminal)
            continue
        fetched_day = <object>PyTuple_GET_ITEM(<object>entry, 1)
        first = fetched_day - label_delay
        if first < day - span_days:
            first = day - span_days
        if first > last:
            whole.append(terminal)
            continue
        since.append(terminal)
        firsts.append(first)
        lasts.append(last)
        keys.append(key_prefix + terminal)
    return whole, since, firsts, lasts, keys


def merge(dict counts, list since, list firsts, list lasts, list flat, int64_t day,
          int64_t version, int64_t max_span, int64_t retention, cached):
    """``TerminalStore._merge`` for compiled counts: fold the script's per-day counts
    (``flat``: per terminal and day, transactions then frauds) into the cached ones,
    each changed terminal under a new version from ``version`` on; ``cached`` builds an
    entry (``_Cached``). Returns the next unused version."""
    cdef Py_ssize_t i, j, at = 0, n_days, n_flat = PyList_GET_SIZE(flat)
    cdef int64_t first, last
    cdef PyObject* entry
    cdef NativeTerminalCounts c
    cdef bint quiet
    for i in range(len(since)):
        terminal = since[i]
        first = firsts[i]
        last = lasts[i]
        n_days = last - first + 1
        if at + 2 * n_days > n_flat:
            raise ValueError("merge: the script returned fewer counts than asked for")
        entry = PyDict_GetItemWithError(counts, terminal)
        if entry == NULL or (<object>PyTuple_GET_ITEM(<object>entry, 1)) >= day:
            at += 2 * n_days  # dropped (a label) or refetched whole meanwhile
            continue
        counts_object = <object>PyTuple_GET_ITEM(<object>entry, 3)
        if type(counts_object) is not NativeTerminalCounts:
            raise TypeError("merge: the store's counts are not compiled")
        c = <NativeTerminalCounts>counts_object
        quiet = True
        for j in range(2 * n_days):
            if PyLong_AsLongLong(<object>PyList_GET_ITEM(flat, at + j)) != 0:
                quiet = False
                break
        fetched_at = <object>PyTuple_GET_ITEM(<object>entry, 0)
        if quiet and (c._n == 0 or first > c._lo + c._n - 1):
            # nothing on days after all the cached ones: the counts and every feature
            # stay as they are, only their event day moves
            counts[terminal] = cached(fetched_at, day, <object>PyTuple_GET_ITEM(<object>entry, 2), c)
            at += 2 * n_days
            continue
        if c._n and first > c._lo + c._n - 1 + max_span:
            # days far beyond the held ones (a replay jumping ahead, or one future-dated
            # transaction): prune first what the prune below would drop anyway, instead of
            # allocating every day in between
            c.prune(day - retention)
        c._cover(first, last)
        for j in range(n_days):
            c._tx[first - c._lo + j] = PyLong_AsLongLong(<object>PyList_GET_ITEM(flat, at + 2 * j))
            c._fraud[first - c._lo + j] = PyLong_AsLongLong(
                <object>PyList_GET_ITEM(flat, at + 2 * j + 1)
            )
        c._accumulate(first - c._lo)
        at += 2 * n_days
        if c._n > max_span:  # a long replay: keep it bounded
            c.prune(day - retention)
        counts[terminal] = cached(fetched_at, day, version, c)
        version += 1
    return version
