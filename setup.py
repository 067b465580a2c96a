"""Builds tailfast's one extension module: tailfast/_core.pyx plus the C core in csrc/.

TAILFAST_DEBUG=1 builds without optimisation, with assertions and Cython
annotation (tailfast/_core.html).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("TAILFAST_DEBUG") == "1"
C_SOURCES = [
    "csrc/http.c",
    "csrc/worker.c",
    "csrc/accept.c",
    "csrc/conn.c",
    "csrc/serve.c",
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
    "csrc/loadgen.c",
]

extension = Extension(
    "tailfast._core",
    sources=["tailfast/_core.pyx", *C_SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
    define_macros=[] if DEBUG else [("NDEBUG", "1")],
)

setup(
    ext_modules=cythonize(
        [extension],
        annotate=DEBUG,
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
)
