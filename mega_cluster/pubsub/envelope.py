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

import functools
import itertools
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from ..exceptions import MessageEncodeError

VERSION = 1
TO_ALL = "all"
TO_OTHERS = "others"
TO_SELF = "self"

# message id = random per-process prefix + counter: unique, and much cheaper than
# uuid4() per message
_id_prefix = secrets.token_hex(8)
_id_counter = itertools.count()

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_quoted = functools.lru_cache(maxsize=4096)(_dumps)  # app, node, channel names
_raw_decode = json.JSONDecoder().raw_decode
_encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
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
    if len(text) * 4 <= max_bytes:  # at most 4 UTF-8 bytes per character
        return text
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
        f'{{"v":{VERSION},"id":"{_id_prefix}{next(_id_counter):016x}","app":{_quoted(app)},'
        f'"node":{_quoted(node)},"ch":{_quoted(channel)},"seq":{seq},'
        f'"ts":{time.time():.6f},"to":"{to}","p":{payload_json}}}'
    ).encode()


def decode(data: bytes | str) -> Envelope:
    """Parse wire bytes; ``ValueError`` when they are not a version-1 envelope."""
    # str input skips json's encoding detection; raw_decode skips json.loads's
    # wrappers (a third of the cost of a small message)
    text = data.decode() if isinstance(data, bytes) else data
    raw, end = _raw_decode(text)
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data after the envelope")
    if type(raw) is not dict or raw.get("v") != VERSION:
        raise ValueError(f"not a mega_cluster v{VERSION} envelope")
    return Envelope(
        VERSION,
        raw["id"],
        raw["app"],
        raw["node"],
        raw["ch"],
        raw["seq"],
        raw["ts"],
        raw["to"],
        raw["p"],
    )


def _after_fork() -> None:
    global _id_prefix, _id_counter
    _id_prefix = secrets.token_hex(8)
    _id_counter = itertools.count()


os.register_at_fork(after_in_child=_after_fork)
