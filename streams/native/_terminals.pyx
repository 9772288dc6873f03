# Compiled twins of the terminal store's per-transaction loops; see
# streams/native/__init__.py.
#
# needed_days  <->  streams.terminal_store.needed_days
# rows         <->  streams.terminal_store.TerminalStore.rows (features of each row)
# count_rows   <->  streams.terminal_store.TerminalStore.add_transactions
#
# They read the store's own Python structures (``_Cached`` tuples, ``TerminalCounts``
# with ``_Cumulative`` totals) and compute each feature with the same integer sums and
# the same division as ``TerminalCounts.features`` (tests/unit/test_native_terminals.py).


cdef extern from *:
    """
    #ifndef RS_SOURCE_SHA
    #define RS_SOURCE_SHA "unknown"
    #endif
    """
    const char* RS_SOURCE_SHA

#: sha256 of the kernels' sources this module was compiled from (see streams/native).
SOURCE_SHA = (<bytes>RS_SOURCE_SHA).decode()

from cpython.dict cimport PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong, PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int64_t

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL

cdef long long WINDOWS[3]
WINDOWS[0] = 1
WINDOWS[1] = 7
WINDOWS[2] = 30


def _check_constants(windows, long long label_delay, long long counts_field):
    """Raises if the Python side moved away from what this kernel reads."""
    if tuple(windows) != (1, 7, 30) or label_delay != 7 or counts_field != 3:
        raise ImportError("streams.native._terminals was built for other terminal features")


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
    """``_Cumulative.through(day)``: the running total up to and including ``day``."""
    cdef long long i = day - first
    if top < 0 or i < 0:
        return 0
    if i > top:
        i = top
    return PyLong_AsLongLong(<object>PyList_GET_ITEM(totals, <Py_ssize_t>i))


def rows(dict counts, list terminal_ids, const int64_t[:] days, long long label_delay,
         double[:, ::1] out):
    """Terminal features of each row into ``out[i, 0:6]`` (zeros without counts)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(terminal_ids), w, t_top, f_top
    cdef PyObject* entry
    cdef long long last, t_first, f_first, n_last, f_last, n_w, f_w
    cdef list t_totals, f_totals
    if days.shape[0] < n or out.shape[0] < n or out.shape[1] != 6:
        raise ValueError("rows: columns shorter than terminal_ids")
    for i in range(n):
        entry = PyDict_GetItemWithError(counts, <object>PyList_GET_ITEM(terminal_ids, i))
        if entry == NULL:
            for w in range(6):
                out[i, w] = 0.0
            continue
        c = <object>PyTuple_GET_ITEM(<object>entry, 3)  # _Cached.counts
        tx = c._tx
        fraud = c._fraud
        t_totals = tx.totals
        f_totals = fraud.totals
        t_first = tx.first
        f_first = fraud.first
        t_top = PyList_GET_SIZE(t_totals) - 1
        f_top = PyList_GET_SIZE(f_totals) - 1
        last = days[i] - label_delay - 1  # every window ends here
        n_last = _through(t_first, t_totals, t_top, last)
        f_last = _through(f_first, f_totals, f_top, last)
        for w in range(3):
            n_w = n_last - _through(t_first, t_totals, t_top, last - WINDOWS[w])
            f_w = f_last - _through(f_first, f_totals, f_top, last - WINDOWS[w])
            out[i, 2 * w] = <double>n_w
            out[i, 2 * w + 1] = (<double>f_w / <double>n_w) if n_w else 0.0
    return None


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
