"""An ASGI app whose lifespan fills the state; each request gets its own shallow copy."""

from __future__ import annotations

import json
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["shared"] = 1
            await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    state = scope["state"]
    seen = state.get("seen")
    state["seen"] = "this request"  # must not leak into the next request's state
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body",
                "body": json.dumps({"shared": state["shared"], "seen": seen}).encode()})
