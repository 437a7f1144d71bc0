"""A schema registry held in memory on every node, kept in step by sync messages.

The NocoBase cluster guide's data-source example: collections and fields live in
the database; every node keeps them in memory for fast access. A node that
changes one tells the others after the transaction commits
(``send_sync_message(..., transaction=alias)``); they reload that collection in
``handle_sync_message``. Schema changes of a collection run under a cluster lock
(``lock_manager.run_exclusive``) so two nodes removing the same field remove it
once. A node that may have missed messages reloads everything in
``handle_sync_gap()``.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.utils import timezone

from mega_cluster import Plugin

from .models import FIELD_TYPES, Collection, Field, name_validator


class UnknownCollection(LookupError):
    """No collection has that name."""


class DuplicateName(ValueError):
    """A collection or field with that name already exists."""


def _check_name(value: str, what: str) -> str:
    try:
        name_validator(value)
    except ValidationError as exc:
        raise ValidationError(f"Invalid {what} name {value!r}: {exc.messages[0]}")
    return value


class DataSourcePlugin(Plugin):
    name = "data_source"
    version = "1.0.0"
    #: Seconds to wait for another node's schema change of the same collection.
    lock_wait = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schema: dict[str, dict[str, Any]] = {}
        self._mutex = threading.Lock()
        self.reloads = 0  # full reloads (load and gaps), for the example page

    # the in-memory registry ------------------------------------------------------

    def load(self) -> None:
        self.reload_all()

    def reload_all(self) -> None:
        """Read every collection from the database into this node's memory."""
        schema = {
            c.name: c.as_dict() for c in Collection.objects.prefetch_related("fields")
        }
        with self._mutex:
            self._schema = schema
            self.reloads += 1

    def reload_collection(self, name: str) -> None:
        """Re-read one collection (dropped from memory when it no longer exists)."""
        found = Collection.objects.prefetch_related("fields").filter(name=name).first()
        with self._mutex:
            if found is None:
                self._schema.pop(name, None)
            else:
                self._schema[name] = found.as_dict()

    @property
    def schema(self) -> dict[str, dict[str, Any]]:
        """A copy of this node's registry: ``{name: {"title", "fields"}}``."""
        with self._mutex:
            return copy.deepcopy(self._schema)

    def get_collection(self, name: str) -> dict[str, Any] | None:
        with self._mutex:
            found = self._schema.get(name)
            return copy.deepcopy(found) if found is not None else None

    # changes ---------------------------------------------------------------------

    def create_collection(
        self, name: str, title: str = "", fields: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create a collection with ``fields`` (``{name: type}``).

        Raises ``ValidationError`` for a bad name or type, ``DuplicateName`` when
        the collection exists.
        """
        _check_name(name, "collection")
        for field_name, field_type in (fields or {}).items():
            self._check_field(field_name, field_type)

        def create() -> dict[str, Any]:
            with transaction.atomic(using=self._alias):
                # Write first: on SQLite a transaction that reads before it
                # writes can fail at once with "database is locked".
                try:
                    with transaction.atomic(using=self._alias):
                        collection = Collection.objects.create(name=name, title=title)
                except IntegrityError:
                    raise DuplicateName(
                        f"Collection {name!r} already exists."
                    ) from None
                for field_name, field_type in (fields or {}).items():
                    Field.objects.create(
                        collection=collection, name=field_name, type=field_type
                    )
                self.schema_changed(name)
                return collection.as_dict()

        return self._exclusive(name, create)

    def update_collection(self, name: str, *, title: str) -> dict[str, Any]:
        with transaction.atomic(using=self._alias):
            updated = Collection.objects.filter(name=name).update(
                title=title, updated_at=timezone.now()
            )
            if not updated:
                raise UnknownCollection(f"No collection named {name!r}.")
            self.schema_changed(name)
        return {"name": name, "title": title}

    def delete_collection(self, name: str) -> bool:
        """Delete a collection and its fields; False when it was already gone."""

        def delete() -> bool:
            with transaction.atomic(using=self._alias):
                if not self._touch(name):
                    return False
                Collection.objects.filter(name=name).delete()
                self.schema_changed(name)
                return True

        return self._exclusive(name, delete)

    def add_field(
        self, collection: str, name: str, type: str, *, required: bool = False
    ) -> dict[str, Any]:
        self._check_field(name, type)

        def add() -> dict[str, Any]:
            with transaction.atomic(using=self._alias):
                owner = self._collection(collection)
                if owner.fields.filter(name=name).exists():
                    raise DuplicateName(
                        f"Collection {collection!r} already has a field {name!r}."
                    )
                Field.objects.create(
                    collection=owner, name=name, type=type, required=required
                )
                self.schema_changed(collection)
                return {"name": name, "type": type, "required": required}

        return self._exclusive(collection, add)

    def remove_field(self, collection: str, name: str) -> bool:
        """Remove a field under the collection's cluster lock.

        Returns True when this call removed it and False when it was already gone
        (another node got there first). Raises ``UnknownCollection`` and
        ``LockTimeout`` (nothing removed) when the lock stays held.
        """

        def remove() -> bool:
            with transaction.atomic(using=self._alias):
                owner = self._collection(collection)
                deleted, _ = owner.fields.filter(name=name).delete()
                if deleted:
                    self.schema_changed(collection)
                return bool(deleted)

        return self._exclusive(collection, remove)

    # other nodes -----------------------------------------------------------------

    def handle_sync_message(self, message: Any) -> None:
        self.reload_collection(message["collection"])

    def handle_sync_gap(self) -> None:
        self.reload_all()

    # helpers ---------------------------------------------------------------------

    @property
    def _alias(self) -> str:
        return router.db_for_write(Collection)

    def _exclusive(self, collection: str, fn: Any) -> Any:
        # One schema change per collection at a time across the cluster; the
        # transaction inside fn commits before the lock is released.
        return self.lock_manager.run_exclusive(
            f"data_source:{collection}", fn, wait=self.lock_wait
        )

    def schema_changed(self, collection: str) -> None:
        """After commit: reload ``collection`` here and on every other node.

        Call it inside the transaction of any schema write that does not go
        through this class (the admin does)."""
        alias = self._alias
        transaction.on_commit(lambda: self.reload_collection(collection), using=alias)
        self.send_sync_message({"collection": collection}, transaction=alias)

    @staticmethod
    def _touch(name: str) -> bool:
        """Lock the collection's row by writing it (a row lock on PostgreSQL, the
        write lock at once on SQLite, where read-then-write can deadlock)."""
        return bool(
            Collection.objects.filter(name=name).update(updated_at=timezone.now())
        )

    def _collection(self, name: str) -> Collection:
        if not self._touch(name):
            raise UnknownCollection(f"No collection named {name!r}.")
        return Collection.objects.get(name=name)

    @staticmethod
    def _check_field(name: str, type: str) -> None:
        _check_name(name, "field")
        if type not in FIELD_TYPES:
            raise ValidationError(
                f"Unknown field type {type!r}; expected one of {', '.join(FIELD_TYPES)}."
            )
