"""The wire envelope, identical on every backend.

A message on the wire is one JSON object::

    {"v": 1, "id": "…", "app": "main", "node": "host-12-ab12cd34", "ch": "orders",
     "seq": 42, "ts": 1700000000.123, "to": "others", "p": <payload>}

``seq`` counts per publisher node and channel (starting at 1 for each node), so a
receiver can tell order and gaps. ``to`` is ``"all"``, ``"others"`` (``skip_self``)
or ``"self"`` (``only_self``); receivers decide by comparing ``node`` with their own
node id, never by a backend feature. The payload is encoded once, at the call, with
``DjangoJSONEncoder`` and spliced in, so the size check and the error happen before
anything is sent.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from ..exceptions import MessageEncodeError

VERSION = 1
TO_ALL = "all"
TO_OTHERS = "others"
TO_SELF = "self"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded message, as handed to internal subscribers."""

    version: int
    id: str
    app: str
    node: str
    channel: str
    seq: int
    timestamp: float
    to: str
    payload: Any


def encode_payload(message: Any, max_bytes: int) -> str:
    """``message`` as JSON text; ``MessageEncodeError`` when impossible or too big."""
    try:
        text = _encoder.encode(message)
    except (TypeError, ValueError) as exc:
        raise MessageEncodeError(
            f"The message is not JSON-serialisable ({exc}); send only dicts, lists, "
            "strings, numbers, booleans, None (dates, decimals and UUIDs are "
            "converted by DjangoJSONEncoder)."
        ) from exc
    size = len(text.encode())
    if size > max_bytes:
        raise MessageEncodeError(
            f"The encoded message is {size} bytes, over the {max_bytes}-byte limit; "
            "send an id and load the data on the receiving side, or raise "
            "MEGA_CLUSTER['MESSAGE_MAX_BYTES']."
        )
    return text


def build(
    *, app: str, node: str, channel: str, seq: int, to: str, payload_json: str
) -> bytes:
    """The wire bytes of one message (``payload_json`` from :func:`encode_payload`)."""
    return (
        f'{{"v":{VERSION},"id":"{uuid.uuid4().hex}","app":{_dumps(app)},'
        f'"node":{_dumps(node)},"ch":{_dumps(channel)},"seq":{seq},'
        f'"ts":{time.time():.6f},"to":"{to}","p":{payload_json}}}'
    ).encode()


def decode(data: bytes | str) -> Envelope:
    """Parse wire bytes; ``ValueError`` when they are not a version-1 envelope."""
    raw = json.loads(data)
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        raise ValueError(f"not a mega_cluster v{VERSION} envelope")
    return Envelope(
        version=raw["v"],
        id=raw["id"],
        app=raw["app"],
        node=raw["node"],
        channel=raw["ch"],
        seq=raw["seq"],
        timestamp=raw["ts"],
        to=raw["to"],
        payload=raw["p"],
    )
