"""The student socket's text messages (``WS /ws/student``) as declared msgspec structs.

Binary messages (JPEG frames, edge-capture faces messages) are ``app/ingest.py``'s and
``classpulse.edge_wire``'s; this module is the JSON control protocol beside them:

- in, from the page: ``camera``, ``stats``, ``withdraw``, ``ping`` — one tagged union on
  ``type``, decoded and validated once at the door by ``parse``; anything else raises
  ``MessageError`` whose text is the ``error`` reply the page gets (the socket counts it and
  closes after too many in a row);
- out, to the page: ``config``, ``ack``, ``rate``, ``error``, ``pong`` (the socket's own), and
  ``self``, ``policy``, ``session_ended`` (relayed from the session's live channel by ``relay``).

Versions. Incoming messages may carry ``"v"`` (absent: ``PROTOCOL_VERSION``, as every page sends
today); a message of another version is refused here, where it is consumed, rather than misread.
Outgoing messages carry none: no page reads one, and pages ignore fields they do not know, so
the replies only ever grow by new fields; a change pages could misread would be a new socket
subprotocol (``app.ws_common.SUBPROTOCOL``), which the browser negotiates in the handshake.
A relayed live update's own ``v`` (``contracts.LiveUpdate``) is checked by ``relay`` and not
forwarded: an update of another schema version is dropped as malformed.
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields as dataclass_fields
from typing import Annotated, Any

import msgspec

from classpulse import contracts, edge_wire
from classpulse.policy import Policy

PROTOCOL_VERSION = 1
# A stats message is about 100 characters: longer text is refused before it is decoded (a page
# sending its JPEG as text, or a script probing the parser with megabytes of JSON).
MAX_TEXT_CHARS = 4096
MAX_CAPTURED = 100_000  # frames a page may report in one stats message (it reports every 5 s)


class MessageError(ValueError):
    """A text message the socket refuses; ``str()`` is the ``error`` reply's message."""


# --- in ----------------------------------------------------------------------------------------
class Incoming(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, frozen=True):
    # Pages leave it out (omitted again when encoded); any other version is refused, not guessed.
    v: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.v != PROTOCOL_VERSION:
            raise ValueError(_EXPLAIN["v"])


class Camera(Incoming, tag="camera", frozen=True):
    """The page's camera went on or off (presence on the teacher's tile)."""

    state: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state not in ("on", "off"):
            raise ValueError(_EXPLAIN["state"])


class Stats(Incoming, tag="stats", frozen=True):
    """Frames captured since the last report; optionally what the page sends (``capture``),
    the detector's median time per frame and why it fell back from edge capture."""

    captured: Annotated[int, msgspec.Meta(ge=0, le=MAX_CAPTURED)]
    capture: str | None = None
    detector_ms: Annotated[float, msgspec.Meta(ge=0, lt=edge_wire.MAX_DETECTOR_MS)] | None = None
    fallback: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checked against the tuples in contracts (the one list of each) rather than Literals.
        if self.capture is not None and self.capture not in contracts.CAPTURE_MODES:
            raise ValueError(_EXPLAIN["capture"])
        if self.fallback is not None and self.fallback not in contracts.CAPTURE_FALLBACKS:
            raise ValueError(_EXPLAIN["fallback"])


class Withdraw(Incoming, tag="withdraw", frozen=True):
    """The student withdraws: recorded, then the socket closes (``1000 withdrawn``)."""


class Ping(Incoming, tag="ping", frozen=True):
    """Keep-alive from lib/socket.js; answered with ``pong``."""


Control = Camera | Stats | Withdraw | Ping
TYPES = tuple(t.__struct_config__.tag for t in typing.get_args(Control))
_control = msgspec.json.Decoder(Control)

_FRAMES_ARE_BINARY = "frames are binary JPEG or faces messages"
_NOT_OBJECT = f'text messages must be JSON objects with a "type"; {_FRAMES_ARE_BINARY}'
# What the page is told about each field it got wrong (msgspec names the field in its error).
_EXPLAIN = {
    "v": f'"v" must be {PROTOCOL_VERSION}, the version of these messages this server speaks',
    "state": 'camera messages need "state": "on" or "off"',
    "captured": 'stats messages need "captured": a count of frames since the last report',
    "capture": '"capture" must be ' + " or ".join(f'"{m}"' for m in contracts.CAPTURE_MODES),
    "detector_ms": '"detector_ms" must be a number of milliseconds, '
    f"0 ≤ ms < {edge_wire.MAX_DETECTOR_MS:.0f}",
    "fallback": f'"fallback" must be one of {", ".join(contracts.CAPTURE_FALLBACKS)}',
}
_FIELD = re.compile(r"at `\$\.(\w+)`|missing required field `(\w+)`")
_TYPE_VALUE = re.compile(r"^Invalid value (.*) - at `\$\.type`$")


def parse(text: str) -> Control:
    """The control message in ``text``, validated; ``MessageError`` says what is wrong."""
    if len(text) > MAX_TEXT_CHARS:
        raise MessageError(
            f"text messages are at most {MAX_TEXT_CHARS} characters; {_FRAMES_ARE_BINARY}"
        )
    try:
        return _control.decode(text)
    except msgspec.ValidationError as exc:
        raise MessageError(_explain(str(exc))) from None
    except msgspec.DecodeError:  # not JSON at all
        raise MessageError(_NOT_OBJECT) from None


def _explain(error: str) -> str:
    """msgspec's validation error as the page is told it."""
    if error in _EXPLAIN.values():  # raised by a __post_init__ above
        return error
    found = _FIELD.search(error)
    field = found and (found.group(1) or found.group(2))
    if field is None or error == "Object missing required field `type`":  # not an object
        return _NOT_OBJECT
    if field == "type":  # a "type" that is none of ours (or not a string)
        value = _TYPE_VALUE.match(error)
        shown = f" {value.group(1)[:40]}" if value else ""
        return f"unknown message type{shown}; expected {', '.join(TYPES)}"
    return _EXPLAIN.get(field, f"invalid {field!r} in a text message")


# --- out ---------------------------------------------------------------------------------------
class Outgoing(msgspec.Struct, tag_field="type"):
    pass


class Config(Outgoing, tag="config"):
    """What and how the page sends, first on every socket and again when the workers' crop
    size changes. The page checks every value (web/static/js/student/config.js)."""

    fps: float
    max_fps: float
    max_in_flight: int
    # Edge capture (docs/edge-wire.md): whether to run the detector in the page and, for JPEG
    # frames, ``frames_allowed`` (false: never fall back to frames) and the frame size under
    # the policy "off" (``app.ingest.page_config``).
    capture: str
    frames_allowed: bool
    presence_width: int
    presence_height: int
    detector_url: str
    faces_version: int
    max_faces: int
    # The worker's detector settings, so both paths find the same faces. A null score
    # threshold: the model's own (its metadata, which the page reads too).
    detector_score_threshold: float | None
    detector_iou_threshold: float
    min_face_size: int
    crop_size: int  # the workers' classifier input side: crops must have it
    crop_scale: float
    emotion_mode: str
    # JPEG frames outside "off": 320×240 carries a face the detector finds at classroom distance.
    width: int = 320
    height: int = 240
    jpeg_quality: float = 0.7


class Ack(Outgoing, tag="ack", omit_defaults=True):
    """One per binary message, in the page's numbering; ``reason`` only on a refusal."""

    seq: int
    ok: bool
    reason: str | None = None


class Rate(Outgoing, tag="rate"):
    """Send at ``fps`` from now on (the workers are behind, caught up, or the page is over its
    cap: ``reason``)."""

    fps: float
    reason: str


class Error(Outgoing, tag="error"):
    message: str


class Pong(Outgoing, tag="pong"):
    pass


class SessionEnded(Outgoing, tag="session_ended"):
    """The teacher ended the session (``app.presence``); the socket closes after it."""

    session_id: str
    t: float


def _policy_fields() -> list[tuple[str, Any, Any]]:
    """Every field of ``Policy`` with its type and default: the policy message follows the
    policy as fields are added to it (``attention``...), with no copy here to drift."""
    hints = typing.get_type_hints(Policy)
    return [(f.name, hints[f.name], f.default) for f in dataclass_fields(Policy)]


# The policy in force, as ``app.policy_views.policy_message`` publishes it to live sessions
# (it owns the building: ``t`` and ``Policy.as_dict()``): the page shows which mode applies.
PolicyMessage: Any = msgspec.defstruct(
    "PolicyMessage", [("t", float), *_policy_fields()], bases=(Outgoing,), tag="policy"
)

# This student's own live update (``contracts.LiveUpdate``, every field, defaults included),
# its type ("student" or "presence") moved to ``kind``: built from LiveUpdate's fields, so
# fields added there (attention's) reach the self-view, as the policy lets the hub pass them.
# Less its ``v``: checked by ``relay`` on the way in, and nothing on the page reads it.
_NOT_FOR_THE_PAGE = ("type", "v")
SelfUpdate: Any = msgspec.defstruct(
    "SelfUpdate",
    [
        ("kind", str),
        *(
            (f.name, f.type) if f.required else (f.name, f.type, f.default)
            for f in msgspec.structs.fields(contracts.LiveUpdate)
            if f.name not in _NOT_FOR_THE_PAGE
        ),
    ],
    bases=(Outgoing,),
    tag="self",
)

_encoder = msgspec.json.Encoder()


def encode(message: Outgoing) -> str:
    return _encoder.encode(message).decode()


# --- relayed from the session's live channel ---------------------------------------------------
class _Kind(msgspec.Struct):
    type: str | None = None  # only the tag is read: the rest is decoded by the kind's struct


_kind = msgspec.json.Decoder(_Kind)
_session_ended = msgspec.json.Decoder(SessionEnded)
_policy = msgspec.json.Decoder(PolicyMessage)
_LIVE_KINDS = ("student", "presence")
_DASHBOARD_ONLY = ("class",)  # the class mix: for dashboards, never a student page


def relay(data: bytes) -> Outgoing | None:
    """What a student page gets for a message of its session's channel (the hub has routed
    it to this student and applied the policy), or None when it is not for the page;
    ``MessageError`` when it is malformed, of an unknown type, or of another schema version."""
    try:
        kind = _kind.decode(data).type
        if kind == "session_ended":
            return _session_ended.decode(data)
        if kind == "policy":
            return _policy.decode(data)
        if kind in _DASHBOARD_ONLY:
            return None
        if kind not in _LIVE_KINDS:
            raise MessageError(f"a live message of unknown type {kind!r}")
        update = contracts.live_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageError(f"a malformed live message: {exc}") from None
    # The one check of LiveUpdate.v on the gateway: an update of a schema this gateway does not
    # know (a newer aggregator during an upgrade) is dropped rather than shown misread.
    if update.v != contracts.SCHEMA_VERSION:
        raise MessageError(f"a live update of schema version {update.v}")
    fields = msgspec.structs.asdict(update)
    kind = fields.pop("type")
    del fields["v"]
    return SelfUpdate(kind=kind, **fields)


def withdrawal(message: Outgoing) -> bool:
    """Whether a relayed self update says this student withdrew (e.g. in another tab)."""
    return isinstance(message, SelfUpdate) and (message.kind, message.presence) == (
        "presence",
        "withdrawn",
    )
