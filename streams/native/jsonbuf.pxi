# A growable byte buffer and orjson-compatible JSON string escaping, shared (by
# `include`) by the kernels that write wire bytes. Plain C on the hot path: no Python
# object is created until a finished record is copied into a ``bytes``.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL


cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int buf_init(Buf* b, Py_ssize_t cap) except -1:
    b.data = <char*>PyMem_Malloc(cap)
    if b.data == NULL:
        raise MemoryError()
    b.size = 0
    b.cap = cap
    return 0


cdef void buf_free(Buf* b) noexcept:
    PyMem_Free(b.data)
    b.data = NULL


cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t want = b.size + extra
    cdef Py_ssize_t cap
    cdef char* grown
    if want <= b.cap:
        return 0
    cap = b.cap * 2
    if cap < want:
        cap = want
    grown = <char*>PyMem_Realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0


cdef inline int buf_put(Buf* b, const char* src, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        buf_reserve(b, n)
    memcpy(b.data + b.size, src, n)
    b.size += n
    return 0


cdef inline int buf_bytes(Buf* b, bytes src) except -1:
    return buf_put(b, PyBytes_AS_STRING(src), PyBytes_GET_SIZE(src))


cdef inline int buf_char(Buf* b, char c) except -1:
    if b.size + 1 > b.cap:
        buf_reserve(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


cdef const char* _HEX = b"0123456789abcdef"


cdef int buf_json_str(Buf* b, str s) except -1:
    """``s`` as a JSON string, escaped exactly as orjson does: ``"`` and ``\\``, and the
    control characters below 0x20 (``\\b \\t \\n \\f \\r`` short, the rest ``\\u00XX``);
    everything else, non-ASCII included, as UTF-8. Raises for lone surrogates (as orjson)."""
    cdef Py_ssize_t n, i
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &n)
    cdef unsigned char c
    buf_reserve(b, n + 2)
    b.data[b.size] = b'"'
    b.size += 1
    for i in range(n):
        c = <unsigned char>p[i]
        if c >= 0x20 and c != 0x22 and c != 0x5C:
            if b.size + 1 > b.cap:
                buf_reserve(b, n - i + 1)
            b.data[b.size] = <char>c
            b.size += 1
            continue
        buf_reserve(b, 6 + n - i)
        b.data[b.size] = b'\\'
        if c == 0x22:
            b.data[b.size + 1] = b'"'
            b.size += 2
        elif c == 0x5C:
            b.data[b.size + 1] = b'\\'
            b.size += 2
        elif c == 0x08:
            b.data[b.size + 1] = b'b'
            b.size += 2
        elif c == 0x09:
            b.data[b.size + 1] = b't'
            b.size += 2
        elif c == 0x0A:
            b.data[b.size + 1] = b'n'
            b.size += 2
        elif c == 0x0C:
            b.data[b.size + 1] = b'f'
            b.size += 2
        elif c == 0x0D:
            b.data[b.size + 1] = b'r'
            b.size += 2
        else:
            b.data[b.size + 1] = b'u'
            b.data[b.size + 2] = b'0'
            b.data[b.size + 3] = b'0'
            b.data[b.size + 4] = _HEX[c >> 4]
            b.data[b.size + 5] = _HEX[c & 15]
            b.size += 6
    buf_char(b, b'"')
    return 0


cdef inline bytes buf_take(Buf* b):
    """The buffer's content as ``bytes``; the buffer is emptied for the next record."""
    cdef bytes out = PyBytes_FromStringAndSize(b.data, b.size)
    b.size = 0
    return out


cdef struct Numbers:
    # A JSON array of numbers as orjson wrote it (b"[1.5,2.0]" or b"[[1.0,2.0],[3.0]]"):
    # the kernels let orjson format floats (shortest round trip, its layout) in bulk and
    # read the numbers back out as byte spans, in order.
    const char* text
    Py_ssize_t size
    Py_ssize_t at


cdef inline void numbers_init(Numbers* n, bytes text) noexcept:
    n.text = PyBytes_AS_STRING(text)
    n.size = PyBytes_GET_SIZE(text)
    n.at = 0


cdef inline Py_ssize_t numbers_next(Numbers* n, Py_ssize_t* start) noexcept:
    """The next number's span (``start``, returned length); brackets and commas skipped;
    -1 at the end. orjson's numbers never hold ``,``, ``[`` or ``]``."""
    cdef Py_ssize_t i = n.at
    cdef char c
    while i < n.size:
        c = n.text[i]
        if c != b'[' and c != b']' and c != b',':
            break
        i += 1
    if i >= n.size:
        n.at = i
        return -1
    start[0] = i
    while i < n.size:
        c = n.text[i]
        if c == b',' or c == b']':
            break
        i += 1
    n.at = i
    return i - start[0]
