"""Redis commands packed by hand and sent in one write: the score agent's Redis round trip.

redis-py's asyncio pipeline packs every argument in Python and re-joins its buffer per
argument; for the score agent's batch (one ``HSET`` with two arguments per transaction)
that cost more than the rest of the pipeline's Redis work together (py-spy). A
:class:`CommandBatch` packs RESP itself (one ``bytes.join``), writes it on one pooled
connection of the client and reads each reply with redis-py's parser (hiredis when
installed). Replies are raw RESP values: bytes, ints, lists (``HGETALL`` is a flat
``[field, value, ...]`` list), ``None``; an error reply comes back as its exception
object, in its place, like ``pipeline.execute(raise_on_error=False)``.

>>> pack_command(("HSET", "k", b"f", 7))
b'*4\\r\\n$4\\r\\nHSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nf\\r\\n$1\\r\\n7\\r\\n'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from streams import native

Arg = bytes | str | int | float


def _as_bytes(arg: Arg) -> bytes:
    if type(arg) is bytes:
        return arg
    if type(arg) is str:
        return arg.encode()
    if type(arg) is int:
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg)
    raise TypeError(f"cannot send {type(arg).__name__} to Redis")


def pack_command(args: Sequence[Arg]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        data = _as_bytes(arg)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


def pack_commands(commands: Sequence[Sequence[Arg]]) -> bytes:
    """Many commands in one RESP payload. The Python reference of
    ``streams.native._records.pack_commands`` (the same bytes).

    >>> pack_commands([("GET", "k"), ("DEL", "k")])
    b'*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n*2\\r\\n$3\\r\\nDEL\\r\\n$1\\r\\nk\\r\\n'
    """
    return b"".join(pack_command(c) for c in commands)


def pack_commands_native(commands: list[tuple[Arg, ...]]) -> bytes:
    """:func:`pack_commands` by the compiled packer."""
    payload: bytes = native.kernel("_records").pack_commands(commands, _as_bytes)
    return payload


class CommandBatch:
    """Commands for one round trip on ``client`` (a ``redis.asyncio.Redis``).

    Clients may offer their own batch (``client.command_batch()``), which is how the
    unit tests' in-memory Redis takes part; see :func:`command_batch`.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.commands: list[tuple[Arg, ...]] = []
        self._pack = pack_commands_native if native.active() else pack_commands

    def add(self, *args: Arg) -> int:
        """Queue one command; returns the index of its reply."""
        self.commands.append(args)
        return len(self.commands) - 1

    def __len__(self) -> int:
        return len(self.commands)

    async def execute(self) -> list[Any]:
        """Send every queued command and read every reply (errors as exception objects)."""
        if not self.commands:
            return []
        payload = self._pack(self.commands)
        pool = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(payload, check_health=False)
            replies: list[Any] = []
            for _ in self.commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as err:  # consumed: the connection stays in step
                    replies.append(err)
            return replies
        except BaseException:
            await connection.disconnect()  # a half-read connection must not be reused
            raise
        finally:
            await pool.release(connection)


def command_batch(client: Any) -> CommandBatch:
    """A batch for ``client``: its own ``command_batch()`` if it has one, else RESP."""
    factory = getattr(client, "command_batch", None)
    batch: CommandBatch = factory() if factory is not None else CommandBatch(client)
    return batch


def pairs(flat: Iterable[Any]) -> dict[Any, Any]:
    """A flat ``[k1, v1, k2, v2, ...]`` reply (``HGETALL``) as a dict.

    >>> pairs([b"t1", b"4", b"f1", b"1"])
    {b't1': b'4', b'f1': b'1'}
    """
    if isinstance(flat, dict):  # a client that already decoded it
        return dict(flat)
    items = flat if isinstance(flat, list) else list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))
