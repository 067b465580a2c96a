"""Counts requests per worker in a page shared by every worker, for the load generator tests.

The anonymous shared mapping is made in the primary at import, before the fork, so
every worker writes its own 8-byte slot of the same page; /stats reads them all.
"""

import mmap
import struct

import tailfast
from tailfast import Response

SLOTS = 64
_shared = mmap.mmap(-1, 8 * SLOTS)


def app(request):
    path = request.path
    if path == "/stats":
        counts = struct.unpack(f"{SLOTS}Q", _shared[:])
        return {str(i): n for i, n in enumerate(counts) if n}
    wid = tailfast.get_worker_id()
    (count,) = struct.unpack_from("Q", _shared, 8 * wid)
    struct.pack_into("Q", _shared, 8 * wid, count + 1)
    if path == "/missing":
        return Response(b"no such page", status=404)
    if path == "/spin":
        # ~50 us of Python per request: the server, not the generator, is the limit.
        return str(sum(range(3000)))
    return f"worker {wid}"
