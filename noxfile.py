"""Sessions: `nox` runs tests, lint and typecheck; `nox -s bench` runs the benchmarks.

The test session brings up what it needs when it is missing (tests/services.py:
a throwaway PostgreSQL cluster, a redis-server on a spare port), so `nox` passes on
any Debian machine with the packages installed.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite against real services (PostgreSQL, Redis, S3, uvicorn, and
    Debian's Chromium for tests/e2e)."""
    session.install("-e", ".[test,e2e]")
    session.env["OMNINUDGE_E2E_REQUIRED"] = "1"
    session.env.setdefault("HYPOTHESIS_PROFILE", os.environ.get("HYPOTHESIS_PROFILE", "ci"))
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """Only the web client in a real browser: Playwright driving Debian's Chromium
    (/usr/bin/chromium, or OMNINUDGE_CHROMIUM); Playwright's own browsers are not used."""
    session.install("-e", ".[test,e2e]")
    session.env["OMNINUDGE_E2E_REQUIRED"] = "1"
    session.run("pytest", "tests/e2e", "--show-capture=no", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def drills(session: nox.Session) -> None:
    """The reliability and security drills at full size (docs/reliability.md); the
    CI-bounded versions run inside `tests`."""
    session.install("-e", ".[test]")
    session.env["OMNINUDGE_DRILL_SCALE"] = "long"
    session.env.setdefault("HYPOTHESIS_PROFILE", "thorough")
    session.run("pytest", "-s", "-q", "--timeout=1800", *(session.posargs or ["tests/drills"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.8")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over src; --strict on omninudge_core (pyproject.toml)."""
    session.install("-e", ".[test]")
    session.run("mypy")
    session.run("mypy", "--strict", "src/omninudge_core")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks; figures go to docs/performance.md by hand, with this command."""
    session.install("-e", ".[test]")
    out = os.environ.get("BENCH_OUT", ".bench")
    os.makedirs(out, exist_ok=True)
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            name = script.removesuffix(".py")
            session.run("python", f"benchmarks/{script}", "--out", f"{out}/{name}.json")
