"""Test-wide settings. Hypothesis profiles are picked with HYPOTHESIS_PROFILE
(``dev`` by default, ``ci`` in .ci/run, ``thorough`` for long local runs)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.services", "tests.services_s3", "tests.services_redis"]

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
