# Over 300 lines: one class, the read → parse → policy → analyse → write loop; per-read helpers are in worker/batch.py.
"""The inference worker: frames stream → FramePipeline → results stream.

A plain loop (arq style): read a batch through the consumer group, drop stale frames, decode,
detect, classify all faces of the batch in one call, then write the results and acknowledge
the frames in one atomic script call (worker/batch.WriteBatch) so a crash can never leave a
frame both answered and pending. Per read, not per message: one round trip for the withdrawn
flags and the policy, one un-filter pass over the packed crops, one write.
Frames that a dead worker left pending are reclaimed with XAUTOCLAIM; a malformed frame is
counted and acknowledged, never fatal. No database, no FastAPI. The loop around (groups,
heartbeat, reclaim, backoff, a lost group) is the one the aggregator runs too:
classpulse/consumer.py.

Edge capture: an entry may instead hold a faces message (the page ran the detector): it is
parsed again (a stream entry is untrusted too), skips decoding and detection, and its crops join
the batch's one classifier call with the crops cut from the other students' frames.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import msgspec
import numpy as np
import redis

from classpulse import contracts as c
from classpulse import edge_wire
from classpulse.consumer import StreamConsumer
from classpulse.head_pose import head_pose
from classpulse.policy import Policy, stricter
from classpulse.settings import Settings
from classpulse.streams import Entry, Parts, stop_on_signals
from worker.aof import AofCompactor
from worker.batch import Tally, WriteBatch, lookups, unfilter, write_script
from worker.pipeline import (
    BadFrame,
    DetectedFrame,
    FaceResult,
    FramePipeline,
    Timings,
    decode_jpeg,
)

log = logging.getLogger(__name__)
RECLAIM_IDLE_MS = 10_000  # a frame pending this long belongs to a worker that died or hung
READ_BLOCK_MS = 500  # an idle worker's read waits this long for frames
CPU_BATCH, GPU_BATCH = 32, 128
# cp:worker_lag holds "lag_ms epoch_s" per worker. Readers ignore reports older than a few
# seconds; reports older than LAG_FORGET_S (workers that died, every restart a new name) are
# removed by the live workers, and the whole hash expires once no worker writes any more.
LAG_FORGET_S = 300.0
LAG_PRUNE_EVERY_S = 60.0
LAG_KEY_TTL_S = 3600
# Deletes the fields whose report is older than ARGV[1] (epoch seconds), atomically, so a field
# re-written meanwhile by its (live) worker is kept.
PRUNE_LAG_SCRIPT = """
local removed = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local at = tonumber(string.match(all[i + 1], '%s(%S+)$') or '')
  if at == nil or at < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
return removed
"""


def prune_worker_lag(r: redis.Redis, now: float | None = None) -> int:
    """Remove lag reports older than LAG_FORGET_S (and unreadable ones); return how many."""
    now = time.time() if now is None else now
    return int(r.eval(PRUNE_LAG_SCRIPT, 1, c.WORKER_LAG_KEY, repr(now - LAG_FORGET_S)))


def batch_size(settings: Settings, pipeline: FramePipeline) -> int:
    """The configured batch size, or one chosen for the device the models actually run on."""
    if settings.worker_batch_size:
        return settings.worker_batch_size
    return GPU_BATCH if pipeline.detector.model.uses_gpu else CPU_BATCH


@dataclass(slots=True)
class Frame:
    entry_id: str
    session_id: str
    student_id: str
    seq: int
    received_ms: float
    emotion: bool
    # The decoded BGR frame, or (edge capture) the faces and crops the page sent.
    image: np.ndarray | DetectedFrame
    mode: str = "per_student"  # the policy's emotion mode this frame is analysed under
    attention: bool = False  # head yaw/pitch observed (stamp and policy: docs/attention.md)
    shard: int = 0  # the frames stream shard it was read from; its result goes to the same shard

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame: decoded, or as the page's detector saw it."""
        if isinstance(self.image, DetectedFrame):
            return self.image.width, self.image.height
        h, w = self.image.shape[:2]
        return w, h


class InferenceWorker(StreamConsumer):
    def __init__(self, settings: Settings, r: redis.Redis, pipeline: FramePipeline) -> None:
        # The stream shards this worker consumes (all unless told), each frames stream with the
        # results stream of the same shard (same hash tag: one Cluster slot for the MULTI/EXEC).
        self.shards = settings.stream_shards
        self.owned = settings.owned_shards
        super().__init__(
            r,
            role="worker",
            group=c.WORKER_GROUP,
            streams=[c.frames_stream(k, self.shards) for k in self.owned],
            heartbeat_prefix=c.WORKER_HEARTBEAT_PREFIX,
            reclaim_idle_ms=settings.reclaim_idle_ms or RECLAIM_IDLE_MS,
        )
        self.settings = settings
        self.pipeline = pipeline
        self.aof = AofCompactor(r, self.name, settings.aof_rewrite_every_s)
        self._last_lag_prune = 0.0
        self.batch_size = batch_size(settings, pipeline)
        self._shard = {c.frames_stream(k, self.shards): k for k in range(self.shards)}
        self.results_streams = c.results_streams(self.shards)  # by shard
        self._write_script = write_script(r)  # a read's writes in one call (worker/batch.py)
        # XREADGROUP's COUNT is per stream: the batch size split over the owned shards, so that
        # one read (one model call, one MULTI/EXEC) stays about one batch however many shards.
        self.read_count = max(1, -(-self.batch_size // len(self.streams)))
        # Edge capture: the crop side faces messages must have (the classifier's square input).
        clf = pipeline.classifier
        self.crop_size = clf.size[0] if clf is not None and clf.size[0] == clf.size[1] else None

    # --- the consumer loop's steps (classpulse/consumer.py) ----------------------------------
    def setup(self) -> None:
        """The groups, and what this worker's model is (for the gateways and the aggregator)."""
        super().setup()
        labels = msgspec.json.encode(list(self.pipeline.labels)).decode()
        info: dict[str, str] = {"labels": labels, **self.pipeline.versions}
        info["stream_shards"] = str(self.shards)  # gateways warn when theirs differs
        # The execution providers this worker obtained (the admin's status page shows them).
        info["providers"] = ",".join(self.pipeline.detector.model.providers)
        if self.crop_size is not None and self.pipeline.classifier is not None:
            # What edge-capture pages are told (through the gateway) to cut their crops to.
            info["crop_size"] = str(self.crop_size)
            info["crop_scale"] = repr(self.pipeline.classifier.crop_scale)
        if self.pipeline.classifier is not None:
            # Calibrated or not, on what, and the "uncertain" threshold in force (pages, aggregator).
            info |= self.pipeline.classifier.published(self.settings.uncertain_below)
        self.r.hset(c.MODEL_INFO_KEY, mapping=info)  # type: ignore[arg-type]  # redis-py's Mapping is invariant
        self.heartbeat.last = 0.0
        self.heartbeat.beat()
        log.info(
            "worker %s ready on %s, batch %d, streams %s",
            self.name,
            ", ".join(self.pipeline.detector.model.providers),
            self.batch_size,
            ", ".join(self.streams),
        )

    def read(self) -> Parts:
        """The next batches, one per frames stream shard that had entries: what dead consumers
        left pending, else new entries of every owned shard in one XREADGROUP (up to
        ``read_count`` per shard: about one batch in all)."""
        return self.reclaim(self.read_count) or self.read_new(self.read_count, READ_BLOCK_MS)

    def consume(self, parts: Parts) -> int:
        return self.process_safely(parts)

    def idle(self) -> None:
        self.aof.maybe_rewrite()  # deletions of the last busy second

    def stopped(self) -> None:
        with contextlib.suppress(redis.RedisError):  # a stopped worker reports no lag
            self.r.hdel(c.WORKER_LAG_KEY, self.name)

    # --- one read ---------------------------------------------------------------------------
    def process_parts(self, parts: Parts) -> int:
        """Analyse one batch read from one or more frames stream shards: every face of it in one
        model call (many shards must not mean small batches), each result written to the results
        shard of its frame's shard, each part acknowledged on its own stream; returns how many
        results were written."""
        entries = [e for _, part in parts for e in part]
        shards = [self._shard.get(stream, 0) for stream, part in parts for _ in part]
        # Who withdrew and the policy now: one round trip for the whole read.
        withdrawn, mirror = lookups(self.r, entries) if entries else (set(), None)
        now_ms = time.time() * 1000
        t0 = time.perf_counter()
        tally = Tally()
        frames, oldest_ms = self._parse_batch(entries, now_ms, tally, shards, withdrawn)
        self._apply_policy(frames, mirror)
        # The packed crops that the policy kept, un-filtered together (``_faces`` left them).
        unfilter(f.image for f in frames if isinstance(f.image, DetectedFrame))
        decode_ms = (time.perf_counter() - t0) * 1000
        frames, results, timings = self._analyze(frames, tally)
        per_frame = {
            "decode": round(decode_ms / max(1, len(entries)), 3),
            "detect": round(timings.detect_ms / max(1, len(frames)), 3),
            "classify": round(timings.classify_ms / max(1, len(frames)), 3),
        }
        done_ms = time.time() * 1000
        tally.add("worker.processed", len(frames))
        tally.add("worker.faces", timings.faces)
        # Results, acknowledgements, counters and lag in one atomic script call (WriteBatch,
        # results first): a frame is acknowledged exactly when its result is in the results
        # stream.
        pipe = WriteBatch(self._write_script)
        encode, maxlen = c.encoder.encode, self.settings.results_stream_maxlen
        streams = self.results_streams
        for frame, faces in zip(frames, results, strict=True):
            try:
                result = self._result(frame, faces, done_ms, per_frame)
            except Exception:  # one frame's result that cannot be written loses that frame only
                log.exception("dropping frame %s: its result cannot be encoded", frame.entry_id)
                tally.add("worker.dropped.error")
                continue
            tally.processed(frame.session_id, frame.student_id)
            result.frame_id = c.result_id(frame.entry_id, frame.shard, self.shards)
            pipe.xadd(streams[frame.shard], c.R_DATA, encode(result), maxlen)
        if entries:
            for stream, part in parts:
                if part:
                    # Acknowledged and deleted: an analysed (or dropped) frame's payload leaves
                    # Redis now, not when MAXLEN trims it (nor stays in its append-only file:
                    # compact_aof). XACKDEL would do both, but only Redis 8.2 has it.
                    pipe.ack_delete(stream, c.WORKER_GROUP, [e[0] for e in part])
            # How far behind this worker is: the gateways lower the pages' rate on it.
            pipe.hset(c.WORKER_LAG_KEY, self.name, f"{now_ms - oldest_ms:.0f} {now_ms / 1000:.1f}")
            pipe.expire(c.WORKER_LAG_KEY, LAG_KEY_TTL_S)
        tally.write(pipe)
        pipe.execute()
        if entries:
            self.aof.deleted()
        if entries and time.monotonic() - self._last_lag_prune > LAG_PRUNE_EVERY_S:
            self._last_lag_prune = time.monotonic()
            prune_worker_lag(self.r)
        return len(frames)

    def process_safely(self, parts: Parts) -> int:
        """``process_parts``, and if it fails other than on Redis (every frame's own failures
        are caught inside: this is the last line), each entry alone, so that only what cannot
        be processed is dropped, counted and deleted: never the worker, never the rest of the
        batch, and never a pending entry that would fail again after every reclaim."""
        try:
            return self.process_parts(parts)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            raise
        except Exception:
            log.exception(
                "batch failed; processing its %d frames one by one", sum(len(p) for _, p in parts)
            )
        done = 0
        for stream, part in parts:
            for entry in part:
                try:
                    done += self.process_parts([(stream, [entry])])
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    raise
                except Exception:
                    log.exception("dropping frame %s that cannot be processed", entry[0])
                    pipe = WriteBatch(self._write_script)
                    pipe.ack_delete(stream, c.WORKER_GROUP, [entry[0]])
                    tally = Tally()
                    tally.dropped("error", entry[1])
                    tally.write(pipe)
                    pipe.execute()
        return done

    def _parse_batch(
        self,
        entries: list[Entry],
        now_ms: float,
        tally: Tally,
        shards: list[int],
        withdrawn: set[bytes],
    ) -> tuple[list[Frame], float]:
        """The batch's analysable frames, decoded, and the oldest receive time seen; the rest
        (``withdrawn`` students, malformed, stale, undecodable) are counted and dropped.
        ``shards``: the stream shard of each entry. The packed crops of faces
        messages are left filtered (``DetectedFrame.filtered``) for ``unfilter``."""
        frames: list[Frame] = []
        oldest_ms = now_ms
        for (entry_id, fields), shard in zip(entries, shards, strict=True):
            with contextlib.suppress(KeyError, ValueError):
                oldest_ms = min(oldest_ms, float(fields[c.F_RECEIVED_MS]))
            try:
                if fields.get(c.F_STUDENT) in withdrawn:
                    raise BadFrame("withdrawn", "the student withdrew; not analysed")
                frames.append(self._parse(entry_id, fields, now_ms))
                frames[-1].shard = shard
            except BadFrame as exc:
                log.debug("dropped frame %s: %s", entry_id, exc)
                tally.dropped(exc.reason, fields)
            except Exception:  # whatever a crafted entry provokes: that frame only, counted
                log.exception("dropped frame %s that could not be parsed", entry_id)
                tally.dropped("malformed", fields)
        return frames, oldest_ms

    def _analyze(
        self, frames: list[Frame], tally: Tally
    ) -> tuple[list[Frame], list[list[FaceResult]], Timings]:
        """Every face of the batch in one model call; frame by frame if the batch fails."""
        try:
            results, timings = self.pipeline.analyze(
                [f.image for f in frames], emotion=[f.emotion for f in frames]
            )
        except Exception:  # one poisonous frame must not take the batch (or the worker) down
            log.exception("batch of %d frames failed; retrying them one by one", len(frames))
            return self._one_by_one(frames, tally)
        return frames, results, timings

    def _result(
        self, frame: Frame, faces: list[FaceResult], done_ms: float, per_frame: dict[str, float]
    ) -> c.FrameResult:
        w, h = frame.size
        labels = self.pipeline.labels
        return c.FrameResult(
            frame_id=frame.entry_id,
            session_id=frame.session_id,
            student_id=frame.student_id,
            seq=frame.seq,
            received_ms=frame.received_ms,
            processed_ms=done_ms,
            width=w,
            height=h,
            faces=[
                c.Face(
                    box=f.box,
                    score=round(f.score, 4),
                    probs=None
                    if f.probs is None
                    else {k: float(p) for k, p in zip(labels, f.probs, strict=True)},
                    **(_pose(f) if frame.attention else {}),
                )
                for f in faces
            ],
            models=self.pipeline.versions,
            timings_ms=per_frame,
            mode=frame.mode,
        )

    def _apply_policy(self, frames: list[Frame], current: Policy | None) -> None:
        """Each frame's mode: the stricter of the gateway's stamp and the policy mirrored now.
        Without a mirror (Redis lost it, the gateway has not re-written it yet) the stamp rules;
        with the mode ``off`` the emotion model never sees the frame (nor a page's crops).
        Attention likewise: observed only when the stamp and the mirrored policy both say so;
        otherwise ``_result`` writes no yaw/pitch (a page's included)."""
        for frame in frames:
            if current is not None:
                frame.mode = stricter(frame.mode, current.emotion_mode)
                frame.attention = frame.attention and current.attention
            frame.emotion = frame.emotion and frame.mode != "off"
            if not frame.emotion and isinstance(frame.image, DetectedFrame):
                frame.image.crops = None  # presence only: the boxes

    def _one_by_one(
        self, frames: list[Frame], tally: Tally
    ) -> tuple[list[Frame], list[list[FaceResult]], Timings]:
        kept: list[Frame] = []
        results: list[list[FaceResult]] = []
        timings = Timings()
        for frame in frames:
            try:
                (faces,), t = self.pipeline.analyze([frame.image], emotion=[frame.emotion])
            except Exception:
                log.exception("dropping frame %s that the pipeline cannot analyse", frame.entry_id)
                tally.add("worker.dropped.error")
                continue
            kept.append(frame)
            results.append(faces)
            timings.detect_ms += t.detect_ms
            timings.classify_ms += t.classify_ms
            timings.faces += t.faces
        return kept, results, timings

    def _parse(self, entry_id: bytes, fields: dict[bytes, bytes], now_ms: float) -> Frame:
        try:
            received_ms = float(fields[c.F_RECEIVED_MS])
            session_id = fields[c.F_SESSION].decode()
            student_id = fields[c.F_STUDENT].decode()
            seq = int(fields.get(c.F_SEQ, b"0"))
            kind = fields.get(c.F_KIND, c.KIND_FRAME)
            payload = fields[c.F_FACES if kind == c.KIND_FACES else c.F_JPEG]
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise BadFrame("malformed", f"malformed stream entry: {exc!r}") from exc
        if kind not in (c.KIND_FRAME, c.KIND_FACES):
            raise BadFrame("malformed", f"unknown entry kind {kind!r}")
        if now_ms - received_ms > self.settings.frame_max_age_ms:
            raise BadFrame("stale", f"frame is {now_ms - received_ms:.0f} ms old")
        emotion = fields.get(c.F_EMOTION, b"1") == b"1"
        mode = fields.get(c.F_MODE, b"per_student" if emotion else b"off").decode(errors="replace")
        return Frame(
            entry_id=entry_id.decode(),
            session_id=session_id,
            student_id=student_id,
            seq=seq,
            received_ms=received_ms,
            emotion=emotion,
            image=self._faces(payload) if kind == c.KIND_FACES else decode_jpeg(payload),
            mode=stricter(mode, mode),  # an unknown mode counts as off
            attention=fields.get(c.F_ATTENTION) == b"1",
        )

    def _faces(self, data: bytes) -> DetectedFrame:
        """A faces message as the frame's faces and crops; BadFrame("malformed") if it breaks
        the wire rules. Crops are accepted whatever the stamped mode: the policy step decides
        whether they are classified."""
        try:
            msg = edge_wire.parse(data, self.settings.max_faces, self.crop_size, crops_allowed=True)
        except edge_wire.WireError as exc:
            raise BadFrame("malformed", f"faces message: {exc} ({exc.reason})") from exc
        faces = [
            FaceResult(
                (round(f.box[0]), round(f.box[1]), round(f.box[2]), round(f.box[3])),
                f.score,
                np.asarray(f.keypoints, np.float32),
                yaw=f.yaw,  # version 2: the page's; version 1: None, computed from the keypoints
                pitch=f.pitch,
            )
            for f in msg.faces
        ]
        crops = None
        if msg.has_crops and faces:
            side = msg.crop_size
            crops = np.frombuffer(msg.crops, np.uint8).reshape(len(faces), side, side)
        # Packed: its "Sub" filter undone with the read's (worker.batch.unfilter).
        return DetectedFrame(
            msg.width, msg.height, faces, crops, crops is not None and msg.filtered
        )


def _pose(face: FaceResult) -> dict[str, float]:
    """A face's yaw and pitch for its result: the page's (faces message version 2), else from
    its keypoints (frames capture: the worker's detector; version 1: the page's keypoints)."""
    if face.yaw is None or face.pitch is None:
        face.yaw, face.pitch = head_pose(face.box, face.keypoints.tolist())
    return {"yaw": round(face.yaw, 2), "pitch": round(face.pitch, 2)}


def main(settings: Settings) -> int:
    if not settings.redis_url:
        raise SystemExit("CLASSPULSE_REDIS_URL is not set (or use `classpulse run`)")
    stop = stop_on_signals()
    pipeline = FramePipeline.from_settings(settings)
    r = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)
    InferenceWorker(settings, r, pipeline).run(stop)
    return 0
