"""The smallest tailfast app: `tailfast run examples.hello:app`."""

from tailfast import Request


def app(request: Request) -> bytes:
    return b"Hello, World!"
