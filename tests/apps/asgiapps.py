"""Raw ASGI 3 applications and native async handlers for tests/test_asgi*.py."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import time
from typing import Any

Scope = dict[str, Any]

DISCONNECTS: list[str] = []  # what the /disconnect route saw (reported by /seen)


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Any, status: int, body: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers or [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    """The benchmark's hello world: start, then the whole body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Routes by path; lifespan supported (state shared into requests)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("ASGI_FAIL_STARTUP"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                scope["state"]["greeting"] = "hello from lifespan"
                scope["state"]["pid"] = os.getpid()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(f"lifespan shutdown in {os.getpid()}", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/scope":
        shown = {k: v for k, v in scope.items() if k not in ("state",)}
        shown = json.loads(json.dumps(shown, default=lambda b: b.decode("latin-1")))
        shown["state"] = scope.get("state")
        await _answer(send, 200, json.dumps(shown).encode(),
                      [(b"content-type", b"application/json")])
    elif path == "/echo":
        body = await _body(receive)
        await _answer(send, 200, body)
    elif path == "/stream":
        n = int(scope["query_string"] or b"5")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i,
                        "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/big":
        size = int(scope["query_string"] or b"1048576")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size * 4).encode())]})
        block = b"x" * size
        for _ in range(4):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"0.02"))
        await _answer(send, 200, b"slept")
    elif path == "/error-before":
        raise RuntimeError("boom before start")
    elif path == "/error-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0)
        raise RuntimeError("boom after start")
    elif path == "/no-response":
        return
    elif path == "/disconnect":
        # waits for the client to leave: receive() after the body
        await _body(receive)
        message = await receive()
        DISCONNECTS.append(message["type"])
    elif path == "/seen":
        await _answer(send, 200, json.dumps(DISCONNECTS).encode())
    elif path == "/after-response":
        await _answer(send, 200, b"done")
        message = await receive()
        message2 = await receive()
        DISCONNECTS.append("after:" + message["type"] + ":" + message2["type"])
    elif path == "/task-api":
        await _answer(send, 200, json.dumps(await _task_api()).encode())
    elif path == "/forever":
        await asyncio.sleep(3600)
    elif path == "/block":
        time.sleep(1.2)  # blocks the event loop: the watchdog names this line
        await _answer(send, 200, b"blocked")
    elif path == "/head":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD"
                    else b"12345"})
    else:
        await _answer(send, 404, b"not found")


async def _timed_out(seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await asyncio.sleep(5)
    except TimeoutError:
        return True
    return False


async def _task_api() -> dict[str, Any]:
    """What code written for asyncio Tasks relies on, before and after the
    coroutine first suspends: current_task(), asyncio.timeout(), TaskGroup,
    cancel() with uncancel(), a bare yield."""
    seen: dict[str, Any] = {"first_step_task": asyncio.current_task() is not None,
                            "first_step_timeout": await _timed_out(0.01)}
    await asyncio.sleep(0)  # a bare yield
    me = asyncio.current_task()
    seen["task"] = me is not None and not me.done() and me.cancelling() == 0
    seen["timeout"] = await _timed_out(0.01)
    seen["cancelling_after_timeout"] = me.cancelling() if me is not None else None
    async with asyncio.TaskGroup() as group:
        children = [group.create_task(asyncio.sleep(0.01, result=n)) for n in (1, 2)]
    seen["task_group"] = [c.result() for c in children]
    if me is not None:  # a cancellation taken back: the request goes on
        later = asyncio.get_running_loop().call_later(0.01, me.cancel)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen["uncancel"] = me.uncancel()
        later.cancel()
    return seen


async def no_lifespan(scope: Scope, receive: Any, send: Any) -> None:
    """Raises on the lifespan scope, as apps that do not support it do."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']}")
    await _answer(send, 200, b"no lifespan here")


class CallableApp:
    """An object whose __call__ is the ASGI coroutine (auto-detected as ASGI)."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise ValueError("no lifespan")
        await _answer(send, 200, b"callable object")


callable_app = CallableApp()


async def handler(request: Any) -> Any:
    """A native async handler, same return values as a sync one."""
    path = request.path
    if path == "/sleep":
        await asyncio.sleep(float(request.query.get("s", "0.02")))
        return {"slept": True, "worker": request.worker_id}
    if path == "/tuple":
        return "created", 201, {"X-Kind": "tuple"}
    if path == "/json":
        return request.json()
    if path == "/stream":
        await asyncio.sleep(0)
        return (f"part {i}\n" for i in range(3))
    if path == "/error":
        await asyncio.sleep(0)
        raise RuntimeError("async boom")
    if path == "/forever":
        await asyncio.sleep(3600)
    return b"async hello"


async def wait20(scope: Scope, receive: Any, send: Any) -> None:
    """bench/asgi.py's waiting handler: 20 ms of asyncio.sleep, then a short answer."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.02)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"done"})


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def context_app(scope: Scope, receive: Any, send: Any) -> None:
    """Sets a context variable per request: the next request must not see it."""
    if scope["type"] != "http":
        return
    before = REQUEST_ID.get()
    REQUEST_ID.set(scope["query_string"].decode())
    if scope["path"] == "/wait":
        await asyncio.sleep(0.01)
    await _answer(send, 200, f"{before} {REQUEST_ID.get()}".encode())
