"""The one rule for the PostgreSQL cases: run, skip, or fail.

Every test that needs PostgreSQL (journal and lease contracts, the PostgreSQL end-to-end and
crash tests, every cluster test) gets its database URL from ``postgres_url()`` and nothing
else decides to skip them. There used to be two rules (``CI == "true"`` in one place,
``true``/``1``/``yes`` in another), so a CI that set ``CI=1`` silently skipped part of the
suite. Now:

- ``DW_TEST_DATABASE_URL`` set: the cases run (an unreachable database then fails them, it
  never skips them);
- not set, outside CI: the cases are skipped, with the reason;
- not set, in CI (``CI`` set to anything but empty/``0``/``false``/``no``/``off``): they
  fail, because a CI run that skipped them would be green without having tested them.
"""

from __future__ import annotations

import os

import pytest

DATABASE_URL_VAR = "DW_TEST_DATABASE_URL"
EXAMPLE_URL = "postgresql://postgres@127.0.0.1:5432/dw_test"

# Values of CI that mean "not CI". Anything else counts as CI: erring that way turns a
# misconfigured CI into a red run instead of a silently thinner one.
_NOT_CI = ("", "0", "false", "no", "off")


def postgres_required() -> bool:
    """True when a missing PostgreSQL must fail the run instead of skipping its cases."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def postgres_url() -> str:
    """The test database URL; skips the calling test without one, or fails it in CI.

    Call it from the test or from a fixture the test uses (not at import or collection
    time), so the decision is taken, and reported, per test.
    """
    url = os.environ.get(DATABASE_URL_VAR, "").strip()
    if url:
        return url
    reason = f"PostgreSQL case not run: {DATABASE_URL_VAR} is not set (e.g. {DATABASE_URL_VAR}={EXAMPLE_URL})"
    if postgres_required():
        pytest.fail(f"{reason}; CI is set, so it may not be skipped", pytrace=False)
    pytest.skip(reason)
