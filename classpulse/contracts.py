"""Wire contracts between gateway, worker and aggregator: Redis keys and message schemas.

Both sides import this module, so names and shapes cannot drift. Frames travel as raw JPEG
bytes in a stream field (never base64, never pickle); results and live updates are msgspec
JSON structs carrying a schema version.
The student socket's text messages are classpulse/socket_messages.py's (a versioned tagged union).
"""

from __future__ import annotations

import zlib

import msgspec

SCHEMA_VERSION = 1

# --- Redis keys ------------------------------------------------------------------------------
FRAMES_STREAM = "cp:frames"
RESULTS_STREAM = "cp:results"
WORKER_GROUP = "workers"
AGGREGATOR_GROUP = "aggregators"
WORKER_HEARTBEAT_PREFIX = "cp:worker:"  # + worker id; a key with a short TTL while alive
AGGREGATOR_HEARTBEAT_PREFIX = "cp:aggregator:"
STATS_KEY = "cp:stats"  # hash of pipeline counters, e.g. "worker.bad_frame" -> n
HEARTBEAT_TTL_S = 15


# --- stream shards ---------------------------------------------------------------------------
# CLASSPULSE_STREAM_SHARDS=N spreads frames and results over N streams, chosen by session id, so
# one class's frames stay in order on one stream and no single stream key (one Redis Cluster
# slot, one node) carries the whole school. N=1 (the default) keeps the names above unchanged;
# N>1 names shard k "cp:frames:{k}" and "cp:results:{k}": the hash tag {k} puts a shard's frames
# and results in the same Cluster slot (the worker writes results and acknowledges frames in one
# MULTI/EXEC) and different shards in different slots. Every process must use the same N.
def shard_of(session_id: str, shards: int) -> int:
    """The shard of a session: CRC-32 of its id modulo N (the same in every process and run,
    unlike Python's salted ``hash``)."""
    return zlib.crc32(session_id.encode()) % shards if shards > 1 else 0


def frames_stream(shard: int, shards: int) -> str:
    return FRAMES_STREAM if shards <= 1 else f"{FRAMES_STREAM}:{{{shard}}}"


def results_stream(shard: int, shards: int) -> str:
    return RESULTS_STREAM if shards <= 1 else f"{RESULTS_STREAM}:{{{shard}}}"


def frames_streams(shards: int) -> list[str]:
    """Every frames stream (for trimming, reclaim, backlog figures and tests)."""
    return [frames_stream(k, shards) for k in range(max(1, shards))]


def results_streams(shards: int) -> list[str]:
    return [results_stream(k, shards) for k in range(max(1, shards))]


def result_id(entry_id: str, shard: int, shards: int) -> str:
    """A frame's id in its result (``FrameResult.frame_id``, the aggregator's idempotency key):
    its entry id, which is unique only within one stream, so with N>1 suffixed ``@<shard>``."""
    return entry_id if shards <= 1 else f"{entry_id}@{shard}"


# Set (NX, with a TTL) by the worker that asks Redis to rewrite its append-only file after
# deleting analysed frames (worker/aof.py): one rewrite per period across all workers.
AOF_REWRITE_KEY = "cp:aof_rewrite"

# Hash worker name -> "<lag ms> <epoch s>": how old the frames were when that worker read them.
# Gateways read it once a second to tell pages to lower (or raise again) their frame rate.
WORKER_LAG_KEY = "cp:worker_lag"


def live_channel(session_id: str) -> str:
    """Pub/sub channel carrying LiveUpdate JSON for one class session."""
    return f"cp:live:{session_id}"


def account_topic(user_id: int) -> str:
    """``live_channel(account_topic(id))`` carries ``{"type": "revoked"}`` when an account's
    tokens end (logout, password change, deactivation): its open dashboards close. A live
    channel, so the gateway's one hub subscription already receives it."""
    return f"account-{user_id}"


REVOKED_MESSAGE = b'{"type":"revoked"}'


def snapshot_key(session_id: str) -> str:
    """Hash student_id -> latest emotion LiveUpdate JSON (aggregator), for late dashboards."""
    return f"cp:snapshot:{session_id}"


def stream_stats_key(session_id: str) -> str:
    """Hash "<student_id>:<counter>" -> n: frames captured, received, accepted, processed and
    dropped.<reason> per student (gateway and worker HINCRBY it in batches)."""
    return f"cp:streamstats:{session_id}"


# The fields of a per-student LiveUpdate that carry an emotion estimate: what the policy withholds
# outside per_student (quality says why a label is uncertain: it is about the estimate too).
EMOTION_FIELDS = ("emotion", "confidence", "probs", "quality")

# Redis keys that hold a session's live state (presence, snapshot, stream stats, class mix,
# alert state, withdrawal flags) expire after this: longer than any class (and far longer than a
# frame can wait in the stream), so keys of finished sessions never pile up.
STATE_TTL_S = 24 * 3600


def withdrawn_key(student_id: str) -> str:
    """Set (by the gateway) when a student withdraws: workers skip that student's frames still in
    the stream, so nothing of theirs is decoded or analysed after the withdrawal."""
    return f"cp:withdrawn:{student_id}"


def presence_key(session_id: str) -> str:
    """Hash student_id -> latest presence LiveUpdate JSON (gateway: connected, camera off...)."""
    return f"cp:presence:{session_id}"


def class_live_key(session_id: str) -> str:
    """Latest ClassUpdate JSON of a session (aggregator), for dashboards that connect late."""
    return f"cp:classlive:{session_id}"


# Hash mirroring the organisation's policy from PostgreSQL (fields as in classpulse.policy.Policy).
# The gateway writes it at start-up and on every change; the worker and the aggregator read it
# once per batch, so a stricter policy applies to the very next batch everywhere.
POLICY_KEY = "cp:policy"


# Hash the worker fills at start: "labels" (JSON list, the emotion model's output order),
# "emotion" and "detector" (model versions), "crop_size" (the classifier's input side, pixels)
# and "crop_scale" (the square crop around a box). The gateway reads it to order labels for
# display, and to tell edge-capture pages how to cut crops (and check the crops they send).
MODEL_INFO_KEY = "cp:models"
# Until a worker has published its classifier's input side: mini-Xception's.
DEFAULT_CROP_SIZE = 64

# --- edge capture (docs/edge-wire.md) ---------------------------------------------------------
# What a student page sends (Settings.capture_mode; each page reports its own in stats messages).
CAPTURE_MODES = ("edge", "frames")
# Where the student page loads the face detector it runs in edge capture (served by the gateway).
EDGE_DETECTOR_URL = "/models/face_detection_short_range.onnx"
# Why a page fell back from edge capture to sending JPEG frames, as its stats message reports it
# (counted in classpulse_capture_fallbacks_total{reason}): the browser cannot run the detector,
# the model did not load, the detector was too slow on this device, or it failed while running.
CAPTURE_FALLBACKS = ("unsupported", "model_load_failed", "too_slow", "error")


# --- frames stream fields (bytes keys; values are bytes) -------------------------------------
# Kept as flat stream fields rather than a struct so the JPEG is never copied or re-encoded.
# One stream for both kinds of entry (a JPEG frame, or an edge-capture faces message): ordering,
# trimming, consumer groups, reclaim and stale-drop apply to both alike.
F_VERSION = b"v"
F_SESSION = b"s"
F_STUDENT = b"u"
F_SEQ = b"q"  # the page's frame number, echoed in the ack and the result
F_RECEIVED_MS = b"t"  # gateway receive time, epoch milliseconds
F_EMOTION = b"e"  # b"1": run the emotion model; b"0": presence only (policy "off")
F_MODE = b"m"  # the policy's emotion mode when the gateway took the frame (absent: per_student)
F_JPEG = b"j"  # the JPEG of a frame entry
# b"1": the policy observes attention (head yaw/pitch, docs/attention.md); absent or b"0": not.
F_ATTENTION = b"a"
F_KIND = b"k"  # KIND_FRAME or KIND_FACES (absent: a frame, as written before edge capture)
# The faces message (classpulse.edge_wire) of a faces entry: its own field, not F_JPEG, so a
# worker that predates edge capture drops it as malformed instead of decoding it as a JPEG.
F_FACES = b"f"
KIND_FRAME = b"frame"
KIND_FACES = b"faces"


# --- results ---------------------------------------------------------------------------------
class Face(msgspec.Struct, array_like=False):
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    score: float
    probs: dict[str, float] | None = None  # label -> probability; None when emotion is off
    # Head orientation in degrees (classpulse.head_pose; docs/attention.md); None when attention
    # is not observed for this frame.
    yaw: float | None = None
    pitch: float | None = None


class FrameResult(msgspec.Struct):
    """One result per processed frame, written by the worker to RESULTS_STREAM."""

    # The frame's entry id in its frames stream (``result_id``: with shards, "<id>@<shard>"): the
    # aggregator's idempotency key.
    frame_id: str
    session_id: str
    student_id: str
    seq: int
    received_ms: float
    processed_ms: float
    width: int
    height: int
    faces: list[Face]
    models: dict[str, str]  # role -> model version, e.g. {"detector": ..., "emotion": ...}
    timings_ms: dict[str, float]
    # The policy's emotion mode this frame was analysed under (per_student | aggregate_only |
    # off); the aggregator applies the stricter of it and the policy in force when it folds.
    mode: str = "per_student"
    v: int = SCHEMA_VERSION


R_DATA = b"d"  # results stream field holding FrameResult JSON


class LiveUpdate(msgspec.Struct):
    """What the teacher's dashboard (and the student's self-view) receives per student."""

    type: str  # "student" (emotion state) or "presence" (connection / camera state)
    session_id: str
    student_id: str
    t: float  # epoch seconds
    # present | no_face | camera_off | disconnected | reconnecting (dropped without a goodbye:
    # the page is retrying) | withdrawn | no_analysis (declined consent)
    presence: str = "present"
    emotion: str | None = None  # label, "uncertain", or None when there is no face / no data
    confidence: float | None = None
    probs: dict[str, float] | None = None  # smoothed
    faces: int = 0
    frames: int = 0
    received_ms: float | None = None  # of the frame behind this update, for latency figures
    seq: int | None = None  # the page's frame number behind this update
    display_name: str | None = None
    # Why "emotion" is "uncertain" rather than a label (None: it is a label, or no face):
    # low_confidence | face_too_small | few_frames (too few frames since the stream resumed).
    quality: str | None = None
    # Attention (docs/attention.md), None when not observed: the latest face faces the screen;
    # the share of this student's observed frames facing it over the last ATTENTION_WINDOW_S;
    # seconds since they last faced it, while they do not now.
    facing: bool | None = None
    facing_share: float | None = None
    away_s: float | None = None
    v: int = SCHEMA_VERSION


# The live fields that carry attention: withheld everywhere when the policy does not observe it.
ATTENTION_FIELDS = ("facing", "facing_share", "away_s")
ATTENTION_WINDOW_S = 300.0


class ClassUpdate(msgspec.Struct):
    """The class's current mix, published by the aggregator outside ``per_student`` mode (where
    the dashboard cannot count tiles): nothing but ``present`` while fewer than
    ``min_group_size`` students show a face (``suppressed``)."""

    session_id: str
    t: float
    mode: str
    present: int  # students with a face seen in the last few seconds
    min_group_size: int
    suppressed: bool
    counts: dict[str, int] | None = None  # label -> students whose smoothed estimate it is
    uncertain: int = 0
    type: str = "class"
    v: int = SCHEMA_VERSION


encoder = msgspec.json.Encoder()
result_decoder = msgspec.json.Decoder(FrameResult)
live_decoder = msgspec.json.Decoder(LiveUpdate)
