"""Builds tailfast's two extension modules: the server's and the bench tools'.

tailfast._core: tailfast/_core.pyx (and its .pxi includes) plus the C core in
csrc/. tailfast._bench: the load generator and the parser benchmark
(tailfast/_bench.pyx, csrc/loadgen.c, csrc/http.c), so that the server's
extension carries no bench code.

TAILFAST_DEBUG=1 builds without optimisation, with assertions and Cython
annotation (tailfast/_core.html, tailfast/_bench.html).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("TAILFAST_DEBUG") == "1"
CORE_SOURCES = [
    "csrc/http.c",
    "csrc/worker.c",
    "csrc/runq.c",
    "csrc/accept.c",
    "csrc/conn.c",
    "csrc/serve.c",
    "csrc/body.c",
    "csrc/dispatch.c",
    "csrc/respond.c",
    "csrc/supervisor.c",
    "csrc/supervisor_procs.c",
    "csrc/supervisor_exit.c",
    "csrc/supervisor_roll.c",
    "csrc/supervisor_signals.c",
    "csrc/supervisor_timers.c",
    "csrc/sd_notify.c",
    "csrc/scoreboard.c",
    "csrc/log.c",
    "csrc/observe.c",
    "csrc/accesslog.c",
    "csrc/websocket.c",
    "csrc/ws_conn.c",
]
BENCH_SOURCES = [
    "csrc/loadgen.c",
    "csrc/http.c",
]


def extension(name: str, pyx: str, c_sources: list[str]) -> Extension:
    return Extension(
        name,
        sources=[pyx, *c_sources],
        include_dirs=["csrc"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
        define_macros=[] if DEBUG else [("NDEBUG", "1")],
    )


setup(
    ext_modules=cythonize(
        [
            extension("tailfast._core", "tailfast/_core.pyx", CORE_SOURCES),
            extension("tailfast._bench", "tailfast/_bench.pyx", BENCH_SOURCES),
        ],
        annotate=DEBUG,
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
)
