"""The libFuzzer targets (tests/fuzz/) still build and pass their seed corpora.

It also runs the fuzzer from the seeds for a 30-second smoke run in CI's run
(CI=true); a developer's plain `pytest` skips it. TAILFAST_FUZZ_SECONDS=N runs
it for N seconds anywhere, TAILFAST_FUZZ_SECONDS=0 skips it in CI too.
Skipped without clang or without its libFuzzer runtime (libclang-rt-*-dev).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
FLAGS = ["-std=c11", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
         "-fno-sanitize-recover=all"]
# target -> (the csrc files it links, its seed corpus)
TARGETS: dict[str, tuple[list[str], Path]] = {
    "fuzz_http": (["http.c", "log.c"], FUZZ / "corpus"),
    "fuzz_websocket": (["websocket.c", "http.c", "log.c"], FUZZ / "corpus_websocket"),
}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def fuzzer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    clang = shutil.which("clang")
    if not clang:
        pytest.skip("clang is not installed")
    name: str = request.param
    exe = tmp_path_factory.mktemp("fuzz") / name
    sources = [FUZZ / f"{name}.c", *(ROOT / "csrc" / c for c in TARGETS[name][0])]
    proc = subprocess.run([clang, *FLAGS, f"-I{ROOT / 'csrc'}", *map(str, sources), "-o", str(exe)],
                          capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 and "clang_rt.fuzzer" in proc.stderr:
        pytest.skip("clang's libFuzzer runtime is not installed (libclang-rt-*-dev)")
    assert proc.returncode == 0, proc.stderr
    return exe


def test_fuzz_target_passes_its_seed_corpus(fuzzer: Path, tmp_path: Path) -> None:
    seeds = sorted(TARGETS[fuzzer.name][1].iterdir())
    assert seeds
    proc = subprocess.run([str(fuzzer), *map(str, seeds)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Executed {seeds[-1]}" in proc.stderr


def fuzz_seconds(environ: dict[str, str]) -> int:
    """How long the smoke run fuzzes: TAILFAST_FUZZ_SECONDS, else 30 s in CI, else 0."""
    default = "30" if environ.get("CI", "").lower() == "true" else "0"
    return int(environ.get("TAILFAST_FUZZ_SECONDS", "") or default)


def test_fuzz_seconds_default_to_ci_only() -> None:
    assert fuzz_seconds({"CI": "true"}) == 30
    assert fuzz_seconds({}) == 0
    assert fuzz_seconds({"TAILFAST_FUZZ_SECONDS": "5"}) == 5
    assert fuzz_seconds({"CI": "true", "TAILFAST_FUZZ_SECONDS": "0"}) == 0


def test_fuzz_smoke_run(fuzzer: Path, tmp_path: Path) -> None:
    seconds = fuzz_seconds(dict(os.environ))
    if seconds <= 0:
        pytest.skip("no fuzzing run outside CI (CI=true or TAILFAST_FUZZ_SECONDS=N runs it)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [str(fuzzer), f"-max_total_time={seconds}", "-max_len=4096", "-print_final_stats=1",
         str(corpus), str(TARGETS[fuzzer.name][1])],
        capture_output=True, text=True, timeout=seconds + 120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not list(tmp_path.glob("crash-*"))
    runs = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
    assert runs and int(runs.group(1)) > 1000, proc.stderr[-2000:]  # it really fuzzed
