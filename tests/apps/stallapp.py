"""A native handler running a short event loop that time.sleep blocks, under the watchdog.

It stands in for the ASGI runner until that exists: the watchdog's warning and its
scoreboard counter are then seen from a real worker (tests/test_watchdog.py).
"""

import asyncio
import time

from tailfast import watchdog


async def blocked() -> None:
    await asyncio.sleep(0)
    time.sleep(0.6)  # the line the warning shows


async def watched() -> int:
    dog = watchdog.start(asyncio.get_running_loop(), 0.2)
    try:
        await asyncio.sleep(0.1)  # the first heartbeat runs
        await blocked()
        await asyncio.sleep(0.2)  # it comes back
        return dog.stalls
    finally:
        dog.stop()


def app(request):
    if request.path == "/stall":
        return str(asyncio.run(watched()))
    return "ok"
