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

from ..validation import encode_json

VERSION = 1
TO_ALL = "all"
TO_OTHERS = "others"
TO_SELF = "self"
_TARGETS = frozenset((TO_ALL, TO_OTHERS, TO_SELF))

# message id = random per-process prefix + counter: unique, and much cheaper than
# uuid4() per message
_id_prefix = secrets.token_hex(8)
_id_counter = itertools.count()

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_quoted = functools.lru_cache(maxsize=4096)(_dumps)  # app, node, channel names


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


# strict like the sending side: NaN and Infinity, which json accepts, are refused
_raw_decode = json.JSONDecoder(parse_constant=_not_json).raw_decode


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
    """``message`` as strict JSON text; ``MessageEncodeError`` when impossible or too
    big (see :func:`mega_cluster.validation.encode_json`)."""
    return encode_json(message, max_bytes)


def build(
    *, app: str, node: str, channel: str, seq: int, to: str, payload_json: str
) -> bytes:
    """The wire bytes of one message (``payload_json`` from :func:`encode_payload`)."""
    return (
        f'{{"v":{VERSION},"id":"{_id_prefix}{next(_id_counter):016x}","app":{_quoted(app)},'
        f'"node":{_quoted(node)},"ch":{_quoted(channel)},"seq":{seq},'
        f'"ts":{time.time():.6f},"to":"{to}","p":{payload_json}}}'
    ).encode()


def decode(data: bytes | str, max_bytes: int | None = None) -> Envelope:
    """Parse wire bytes; ``ValueError`` when they are not a well-formed version-1
    envelope (bad UTF-8 or JSON, a field missing or of the wrong type, nested too
    deep, or over ``max_bytes``)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"frame of {len(data)} bytes, over {max_bytes}")
    # str input skips json's encoding detection; raw_decode skips json.loads's
    # wrappers (a third of the cost of a small message)
    text = data.decode() if isinstance(data, bytes) else data
    try:
        raw, end = _raw_decode(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data after the envelope")
    if type(raw) is not dict or raw.get("v") != VERSION:
        raise ValueError(f"not a mega_cluster v{VERSION} envelope")
    env = Envelope(
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
    # a wrong type here would fail later, in a receiver's bookkeeping (a string
    # seq once made sync messages drop every later message of its sender)
    if not (
        type(env.id) is str
        and type(env.app) is str
        and type(env.node) is str
        and type(env.channel) is str
        and type(env.seq) is int
        and env.seq > 0
        and type(env.timestamp) in (float, int)
        and env.to in _TARGETS
    ):
        raise ValueError("an envelope field has the wrong type or value")
    return env


def _after_fork() -> None:
    global _id_prefix, _id_counter
    _id_prefix = secrets.token_hex(8)
    _id_counter = itertools.count()


os.register_at_fork(after_in_child=_after_fork)
