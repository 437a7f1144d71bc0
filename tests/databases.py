"""Both databases of the suite as pytest params (SQLite ``default`` and PostgreSQL
``postgres``), each with the marks its tests need: parametrise an ``alias``
fixture with :data:`DATABASES`."""

from __future__ import annotations

import pytest

DATABASES = [
    pytest.param("default", id="sqlite", marks=pytest.mark.django_db(transaction=True)),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
        ],
    ),
]
