"""A handler that keeps its request past its return, with a fault injected into
the copy that then runs (tests/test_hardening_responses.py, issue 15 item 4)."""

from tailfast import _core

KEPT = []
_armed = [False]
_Headers = _core.Headers


def _failing_headers(pairs):
    """Headers, but the first call after /keep raises, as a MemoryError while
    copying the kept request out would."""
    if _armed[0]:
        _armed[0] = False
        raise MemoryError("injected: copying the kept request failed")
    return _Headers(pairs)


_core.Headers = _failing_headers


def app(request):
    if request.path == "/keep":
        KEPT.append(request)  # read nothing more: everything is copied after return
        _armed[0] = True
        return b"kept"
    if request.path == "/read-kept":
        kept = KEPT[-1]
        out = [kept.method, kept.path]  # copied before the failure: still there
        for name in ("headers", "body", "host"):
            try:
                value = getattr(kept, name)
            except RuntimeError as exc:
                out.append(f"{name}: RuntimeError: {exc}"[:40])
            else:
                out.append(f"{name}: {value!r}")
        return "\n".join(out)
    return b"ok"
