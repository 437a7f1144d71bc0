from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.db import models

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}\Z"
name_validator = RegexValidator(
    NAME_PATTERN,
    "Use 1-63 characters: lowercase letters, digits and _, starting with a letter.",
)
FIELD_TYPES = ("string", "text", "integer", "decimal", "boolean", "date", "json")


class Collection(models.Model):
    """A user-defined collection (table) of the schema registry."""

    name = models.CharField(max_length=63, unique=True, validators=[name_validator])
    title = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "fields": {
                f.name: {"type": f.type, "required": f.required}
                for f in self.fields.all()
            },
        }


class Field(models.Model):
    """A field of a collection."""

    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, related_name="fields"
    )
    name = models.CharField(max_length=63, validators=[name_validator])
    type = models.CharField(max_length=20, choices=[(t, t) for t in FIELD_TYPES])
    required = models.BooleanField(default=False)

    class Meta:
        ordering = ["collection", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["collection", "name"], name="data_source_field_unique_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.collection.name}.{self.name}"
