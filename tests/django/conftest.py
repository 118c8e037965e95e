"""The django suite's fixtures: django-q2's tables made before its first test, and ``cli_db``,
a migrated SQLite database of the module's own for the commands its tests run as processes
(``manage()``, ``tests/support/commands.py``)."""

from __future__ import annotations

import os

import pytest

from tests.support.commands import migrated_database, sqlite_path


@pytest.fixture(autouse=True, scope="session")
def _django_q2_tables(django_q2_tables):
    """Every test here uses the database: django-q2's tables first (``tests/conftest.py``)."""


@pytest.fixture(scope="module")
def cli_db(request, tmp_path_factory):
    """The environment of a command subprocess on a migrated SQLite database of the module's own
    (``cli_db_path`` is that file)."""
    name = request.module.__name__.rpartition(".")[2]
    path = migrated_database(tmp_path_factory.mktemp("db") / f"{name}.sqlite3")
    return dict(os.environ, DATABASE_URL=f"sqlite:///{path}")


@pytest.fixture(scope="module")
def cli_db_path(cli_db):
    """The SQLite file of ``cli_db``."""
    return sqlite_path(cli_db)
