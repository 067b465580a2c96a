"""A native app for --threads tests: waits, busy loops, a timeout probe and thread names."""

import threading
import time

from tailfast import RequestTimeout

TIMED_OUT: list[str] = []  # names of runner threads where RequestTimeout was raised


def app(request):
    path = request.path
    if path == "/sleep":
        time.sleep(float(request.query.get("s", "0.5")))
        return threading.current_thread().name
    if path == "/spin":
        # a Python loop: RequestTimeout reaches it at the next instruction
        end = time.monotonic() + float(request.query.get("s", "3"))
        try:
            while time.monotonic() < end:
                pass
        except RequestTimeout:
            TIMED_OUT.append(threading.current_thread().name)
            raise
        return "spun"
    if path == "/timed-out":
        return ",".join(TIMED_OUT)
    if path == "/who":
        return threading.current_thread().name
    return b"hello"
