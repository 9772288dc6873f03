# Compiled twins of the score path's record steps; see streams/native/__init__.py.
#
# validate_batch  <->  streams.pipeline.validate_batch (the Python reference)
# score_records   <->  streams.outputs.score_record_bytes
# scored_entries  <->  streams.scored_store.encode_entries
# pack_commands   <->  streams.resp.pack_commands
#
# Each returns exactly what its reference returns (tests/unit/test_native_records.py).


cdef extern from *:
    """
    #ifndef RS_SOURCE_SHA
    #define RS_SOURCE_SHA "unknown"
    #endif
    """
    const char* RS_SOURCE_SHA

#: sha256 of the kernels' sources this module was compiled from (see streams/native).
SOURCE_SHA = (<bytes>RS_SOURCE_SHA).decode()

from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memcmp

from orjson import loads as _json_loads

include "jsonbuf.pxi"

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyDict_CheckExact(object o)
    bint PyBytes_CheckExact(object o)

cdef double MAX_EPOCH_SECONDS = 1e11  # streams.records.schema.MAX_EPOCH_SECONDS
cdef double MAX_AMOUNT = 1e15  # streams.records.schema.MAX_AMOUNT
cdef long long SCHEMA_VERSION = 1  # streams.records.schema.SCHEMA_VERSION


def _check_constants(double max_epoch, double max_amount, long long schema_version):
    """Raises if the Python side's constants moved away from the compiled ones."""
    if (max_epoch != MAX_EPOCH_SECONDS or max_amount != MAX_AMOUNT
            or schema_version != SCHEMA_VERSION):
        raise ImportError("streams.native._records was built for other record constants")


# ---------------------------------------------------------------------------------------
# validate_batch
# ---------------------------------------------------------------------------------------

cdef inline bint _text(PyObject* v) noexcept:
    return v != NULL and PyUnicode_CheckExact(<object>v) and PyUnicode_GET_LENGTH(<object>v) > 0


cdef inline bint _optional_text(PyObject* v) noexcept:
    return v == NULL or <object>v is None or PyUnicode_CheckExact(<object>v)


cdef inline bint _version(PyObject* v) noexcept:
    cdef int overflow = 0
    if v == NULL or not PyLong_CheckExact(<object>v):
        return False
    return PyLong_AsLongLongAndOverflow(<object>v, &overflow) == SCHEMA_VERSION and not overflow


cdef object _accept(object obj, Py_ssize_t max_features, double* ts, double* amount):
    """``(tx_id, card_id, terminal_id, features)`` of a plainly valid transaction object,
    else None: the conditions of ``streams.records.hotpath.accept_transaction``."""
    cdef PyObject* tx_id = PyDict_GetItem(obj, "tx_id")
    cdef PyObject* card_id = PyDict_GetItem(obj, "card_id")
    cdef PyObject* terminal_id = PyDict_GetItem(obj, "terminal_id")
    cdef PyObject* t = PyDict_GetItem(obj, "ts")
    cdef PyObject* a = PyDict_GetItem(obj, "amount")
    cdef PyObject* f
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0
    cdef double x
    if not (_text(tx_id) and _text(card_id) and _text(terminal_id)):
        return None
    if t == NULL or not PyFloat_CheckExact(<object>t):
        return None
    x = PyFloat_AS_DOUBLE(<object>t)
    if not (0.0 <= x < MAX_EPOCH_SECONDS):  # also false for NaN
        return None
    ts[0] = x
    if a == NULL or not PyFloat_CheckExact(<object>a):
        return None
    x = PyFloat_AS_DOUBLE(<object>a)
    if not (0.0 <= x <= MAX_AMOUNT):
        return None
    amount[0] = x
    if not _version(PyDict_GetItem(obj, "schema_version")):
        return None
    if not (
        _optional_text(PyDict_GetItem(obj, "currency"))
        and _optional_text(PyDict_GetItem(obj, "channel"))
        and _optional_text(PyDict_GetItem(obj, "mcc"))
        and _optional_text(PyDict_GetItem(obj, "country"))
    ):
        return None
    f = PyDict_GetItem(obj, "features")
    if f == NULL or <object>f is None:
        features = None  # no free features: an empty map
    else:
        if not PyDict_CheckExact(<object>f) or PyDict_Size(<object>f) > max_features:
            return None
        while PyDict_Next(<object>f, &pos, &key, &value):
            if not PyFloat_CheckExact(<object>value):
                return None
            x = PyFloat_AS_DOUBLE(<object>value)
            if not (-INFINITY < x < INFINITY):
                return None
        features = <object>f if PyDict_Size(<object>f) else None
    return (<object>tx_id, <object>card_id, <object>terminal_id, features)


cdef inline bint _key_is(object key, str card_id) except -1:
    """Whether the Kafka key is exactly the card id's UTF-8 bytes (the usual case)."""
    cdef Py_ssize_t n
    cdef const char* p
    if not PyBytes_CheckExact(key):
        return False
    p = PyUnicode_AsUTF8AndSize(card_id, &n)
    return PyBytes_GET_SIZE(key) == n and memcmp(PyBytes_AS_STRING(key), p, n) == 0


def validate_batch(list records, Py_ssize_t max_bytes, Py_ssize_t max_features, slow, bad_key,
                   stamp_ms, double[:, ::1] numbers, int64_t[:, ::1] positions):
    """Validate ``records``; see ``streams.score_columns.validate_batch``.

    ``slow(record)`` is the full parser (``(transaction, None)``, or ``(None, the
    RecordError to dead-letter)``), called for every value the fast path does not plainly
    accept; ``bad_key(record, card_id)`` the key check's error, or None; ``stamp_ms`` the
    conversion of a timestamp that is not a plain int. ``numbers`` ``[2, n]`` receives
    the valid rows' times and amounts, ``positions`` ``[3, n]`` their partitions,
    offsets and timestamps. Returns ``(kept, tx_ids, card_ids, terminal_ids, features,
    dead)``.
    """
    cdef list kept = [], tx_ids = [], card_ids = [], terminal_ids = [], features = []
    cdef list dead = []
    cdef Py_ssize_t i, n = len(records), j = 0
    cdef double ts = 0.0, amount = 0.0
    cdef long long stamp_value
    cdef int overflow = 0
    cdef object record, value, obj, row, key, err, stamp
    if numbers.shape[0] != 2 or numbers.shape[1] < n or positions.shape[0] != 3 \
            or positions.shape[1] < n:
        raise ValueError("validate_batch: output arrays too small")
    for i in range(n):
        record = <object>PyList_GET_ITEM(records, i)
        value = record.value
        row = None
        if PyBytes_CheckExact(value) and PyBytes_GET_SIZE(value) <= max_bytes:
            try:
                obj = _json_loads(value)
            except Exception:
                obj = None
            if obj is not None and PyDict_CheckExact(obj):
                row = _accept(obj, max_features, &ts, &amount)
        if row is None:
            tx, err = slow(record)
            if tx is None:
                dead.append((record, err))
                continue
            free = tx.features
            row = (tx.tx_id, tx.card_id, tx.terminal_id, free if free else None)
            ts = tx.ts
            amount = tx.amount
        key = record.key
        if not _key_is(key, <str>row[1]):
            err = bad_key(record, row[1])
            if err is not None:
                dead.append((record, err))
                continue
        stamp = record.timestamp
        if stamp is None:
            stamp_value = 0
        elif PyLong_CheckExact(stamp):
            stamp_value = PyLong_AsLongLongAndOverflow(stamp, &overflow)
            if overflow or stamp_value < 0:
                stamp_value = stamp_ms(stamp)
        else:
            stamp_value = stamp_ms(stamp)
        kept.append(record)
        tx_ids.append(row[0])
        card_ids.append(row[1])
        terminal_ids.append(row[2])
        features.append(row[3])
        numbers[0, j] = ts
        numbers[1, j] = amount
        positions[0, j] = record.partition
        positions[1, j] = record.offset
        positions[2, j] = stamp_value
        j += 1
    return kept, tx_ids, card_ids, terminal_ids, features, dead


# ---------------------------------------------------------------------------------------
# score_records
# ---------------------------------------------------------------------------------------

cdef const char* _DECISIONS[3]
_DECISIONS[0] = b'allow'
_DECISIONS[1] = b'review'
_DECISIONS[2] = b'block'


def score_records(list tx_ids, list card_ids, bytes scores, const signed char[:] decisions,
                  bytes model_version, bytes scored_at, bytes latencies,
                  const int64_t[:, :] top, bytes weights, list prefixes):
    """The ``scores`` records' JSON of a batch; see ``streams.outputs.score_record_bytes``.

    ``scores``, ``latencies`` and ``weights`` are orjson's arrays of the batch's numbers
    (weights ``[rows][k]``), ``model_version`` and ``scored_at`` their JSON, ``top`` the
    support indices of each row's explanation and ``prefixes`` each support case's
    ``{"case_id":…,"label":…,"weight":`` bytes. Returns ``(keys, values)``.
    """
    cdef Py_ssize_t n = len(tx_ids), i, j, k = top.shape[1], length, start = 0
    cdef Py_ssize_t n_support = len(prefixes)
    cdef int64_t s_i
    cdef Numbers s_num, l_num, w_num
    cdef Buf b
    cdef list keys = [None] * n, values = [None] * n
    cdef signed char d
    cdef object prefix
    if len(card_ids) != n or decisions.shape[0] != n or top.shape[0] != n:
        raise ValueError("score_records: columns of different lengths")
    numbers_init(&s_num, scores)
    numbers_init(&l_num, latencies)
    numbers_init(&w_num, weights)
    buf_init(&b, 512)
    try:
        for i in range(n):
            tx_id = <str>PyList_GET_ITEM(tx_ids, i)
            buf_put(&b, b'{"tx_id":', 9)
            buf_json_str(&b, tx_id)
            buf_put(&b, b',"card_id":', 11)
            buf_json_str(&b, <str>PyList_GET_ITEM(card_ids, i))
            buf_put(&b, b',"score":', 9)
            length = numbers_next(&s_num, &start)
            if length < 0:
                raise ValueError("score_records: fewer scores than rows")
            buf_put(&b, s_num.text + start, length)
            d = decisions[i]
            if d < 0 or d > 2:
                raise ValueError("score_records: decision code out of range")
            buf_put(&b, b',"decision":"', 13)
            buf_put(&b, _DECISIONS[d], 5 if d != 1 else 6)
            buf_put(&b, b'","model_version":', 18)
            buf_bytes(&b, model_version)
            buf_put(&b, b',"scored_at":', 13)
            buf_bytes(&b, scored_at)
            buf_put(&b, b',"latency_ms":', 14)
            length = numbers_next(&l_num, &start)
            if length < 0:
                raise ValueError("score_records: fewer latencies than rows")
            buf_put(&b, l_num.text + start, length)
            buf_put(&b, b',"explanation":[', 16)
            for j in range(k):
                s_i = top[i, j]
                if s_i < 0 or s_i >= n_support:
                    raise ValueError("score_records: support index out of range")
                if j:
                    buf_char(&b, b',')
                prefix = <object>PyList_GET_ITEM(prefixes, s_i)
                buf_bytes(&b, <bytes>prefix)
                length = numbers_next(&w_num, &start)
                if length < 0:
                    raise ValueError("score_records: fewer weights than explanations")
                buf_put(&b, w_num.text + start, length)
                buf_char(&b, b'}')
            buf_put(&b, b'],"schema_version":1}', 21)
            values[i] = buf_take(&b)
            keys[i] = tx_id.encode()
    finally:
        buf_free(&b)
    return keys, values


# ---------------------------------------------------------------------------------------
# scored_entries
# ---------------------------------------------------------------------------------------

def scored_entries(const unsigned char[:, ::1] vectors, list terminal_ids, bytes ts,
                   list card_ids, bytes model_version, bytes scores):
    """Scored-vector entries of a batch; see ``streams.scored_store.encode_entries``.

    ``vectors`` is the float32 feature matrix viewed as bytes (one row per entry),
    ``ts`` and ``scores`` orjson's arrays of the rows' numbers.
    """
    cdef Py_ssize_t n = len(terminal_ids), i, width = vectors.shape[1], length, start = 0
    cdef Numbers t_num, s_num
    cdef Buf b
    cdef list out = [None] * n
    if len(card_ids) != n or vectors.shape[0] != n:
        raise ValueError("scored_entries: columns of different lengths")
    numbers_init(&t_num, ts)
    numbers_init(&s_num, scores)
    buf_init(&b, 256 + width)
    try:
        for i in range(n):
            buf_char(&b, b'[')
            buf_json_str(&b, <str>PyList_GET_ITEM(terminal_ids, i))
            buf_char(&b, b',')
            length = numbers_next(&t_num, &start)
            if length < 0:
                raise ValueError("scored_entries: fewer times than rows")
            buf_put(&b, t_num.text + start, length)
            buf_char(&b, b',')
            buf_json_str(&b, <str>PyList_GET_ITEM(card_ids, i))
            buf_char(&b, b',')
            buf_bytes(&b, model_version)
            buf_char(&b, b',')
            length = numbers_next(&s_num, &start)
            if length < 0:
                raise ValueError("scored_entries: fewer scores than rows")
            buf_put(&b, s_num.text + start, length)
            buf_put(&b, b']\n', 2)
            if width:
                buf_put(&b, <const char*>&vectors[i, 0], width)
            out[i] = buf_take(&b)
    finally:
        buf_free(&b)
    return out


# ---------------------------------------------------------------------------------------
# pack_commands
# ---------------------------------------------------------------------------------------

cdef inline int _decimal(char* out, long long v) noexcept:
    """``v`` in decimal into ``out`` (at least 21 bytes); returns the length (no snprintf:
    it was most of the packing time)."""
    cdef char tmp[24]
    cdef int n = 0, i, m = 0
    cdef unsigned long long u
    if v < 0:
        out[0] = b'-'
        m = 1
        u = <unsigned long long>(-(v + 1)) + 1
    else:
        u = <unsigned long long>v
    while True:
        tmp[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    for i in range(n):
        out[m + i] = tmp[n - 1 - i]
    return m + n


cdef int _head(Buf* b, char kind, Py_ssize_t n) except -1:
    """``$<n>\r\n`` (a bulk string's length) or ``*<n>\r\n`` (an array's)."""
    cdef char head[32]
    cdef int m
    head[0] = kind
    m = 1 + _decimal(head + 1, n)
    head[m] = b'\r'
    head[m + 1] = b'\n'
    return buf_put(b, head, m + 2)


cdef int _bulk(Buf* b, const char* data, Py_ssize_t n) except -1:
    _head(b, b'$', n)
    buf_put(b, data, n)
    buf_put(b, b"\r\n", 2)
    return 0


def pack_commands(list commands, as_bytes):
    """Redis commands (tuples of bytes/str/int/...) as one RESP payload; see
    ``streams.resp.pack_commands``. ``as_bytes`` converts any other argument type."""
    cdef Buf b
    cdef char head[32]
    cdef int m, overflow = 0
    cdef Py_ssize_t n
    cdef const char* p
    cdef long long v
    cdef tuple command
    buf_init(&b, 4096)
    try:
        for command in commands:
            _head(&b, b'*', len(command))
            for arg in command:
                if PyBytes_CheckExact(arg):
                    _bulk(&b, PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg))
                elif PyUnicode_CheckExact(arg):
                    p = PyUnicode_AsUTF8AndSize(arg, &n)
                    _bulk(&b, p, n)
                elif PyLong_CheckExact(arg):
                    v = PyLong_AsLongLongAndOverflow(arg, &overflow)
                    if overflow:
                        data = as_bytes(arg)
                        _bulk(&b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
                    else:
                        m = _decimal(head, v)
                        _bulk(&b, head, m)
                else:
                    data = as_bytes(arg)
                    _bulk(&b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        buf_free(&b)
