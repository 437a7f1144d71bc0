"""Both databases of the suite as pytest params (SQLite ``default`` and PostgreSQL
``postgres``), each with the marks its tests need: parametrise an ``alias``
fixture with :data:`DATABASES`. :data:`ON_POSTGRES` are the marks of a test (or
param) that uses the PostgreSQL database."""

from __future__ import annotations

import pytest

ON_POSTGRES = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]

DATABASES = [
    pytest.param("default", id="sqlite", marks=pytest.mark.django_db(transaction=True)),
    pytest.param(
        "postgres",
        id="postgres",
        marks=ON_POSTGRES,
    ),
]
