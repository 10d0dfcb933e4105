"""Options shared by the whole suite (pytest reads options only from the root conftest)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite-transcripts",
        action="store_true",
        default=False,
        help="rewrite the expected output of tests/replica/transcripts/*.txt instead of "
        "comparing (also: WALREP_REWRITE_TRANSCRIPTS=1)",
    )
