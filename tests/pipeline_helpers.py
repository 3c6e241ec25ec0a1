"""The inference worker and the aggregator as the tests drive them: the production classes plus
the shortcuts only tests take (one read's entries as one list, a batch handed in without saying
its stream, one result folded alone; a JPEG's size as the worker's decoder reads it). The
services themselves run ``StreamConsumer.run`` (classpulse/consumer.py), which reads and
consumes (stream, entries) parts."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from aggregator import service as aggregator_service
from aggregator.live_state import StudentState, step
from classpulse import contracts as c
from classpulse.jpeg_header import JpegHeaderError, jpeg_size
from classpulse.streams import Entry
from worker import service as worker_service
from worker.pipeline import BadFrame


class InferenceWorker(worker_service.InferenceWorker):
    @property
    def frames_streams(self) -> list[str]:
        """The frames stream shards this worker reads (``StreamConsumer.streams``)."""
        return self.streams

    def read_batch(self) -> list[Entry]:
        """The entries of ``read`` (of one shard, or every shard's together: ``process`` then
        finds each entry's shard from its session)."""
        return [e for _, entries in self.read() for e in entries]

    def process(self, entries: list[Entry], stream: str | None = None) -> int:
        """Analyse one batch read from ``stream`` (a frames stream shard; None: the one this
        worker owns, or with several the shard of each entry's session); returns how many results
        were written."""
        if stream is None and len(self.streams) > 1:
            by_stream: dict[str, list[Entry]] = defaultdict(list)
            for entry in entries:
                sid = entry[1].get(c.F_SESSION, b"").decode(errors="replace")
                by_stream[c.frames_stream(c.shard_of(sid, self.shards), self.shards)].append(entry)
            return self.process_parts(list(by_stream.items()))
        return self.process_parts([(stream or self.streams[0], entries)])


class Aggregator(aggregator_service.Aggregator):
    def read_batch(self) -> list[Entry]:
        """The entries of ``read`` (one shard's: ``handle`` acknowledges them on the first owned
        results stream; with several shards use ``read`` and ``handle_parts``)."""
        return [e for _, entries in self.read() for e in entries]

    def handle(self, entries: list[Entry], stream: str | None = None) -> int:
        """Fold, publish and acknowledge one batch read from ``stream`` (default: the first
        results stream this aggregator owns, which must then be its only one)."""
        if stream is None and len(self.results_streams) > 1:
            raise ValueError("several results stream shards: say which stream the entries are of")
        return self.handle_parts([(stream or self.results_streams[0], entries)])

    def live_update(self, res: c.FrameResult) -> c.LiveUpdate:
        """Fold one result into its student's live state and return its update (what
        ``publish`` does for a flush's latest result per student)."""
        state = self.students.setdefault(res.student_id, StudentState())
        s = step(state, res, self.settings.smoothing_alpha, time.monotonic())
        return self._build(state, s)


@pytest.fixture
def classify_calls(pipeline, monkeypatch) -> list[int]:
    """How many crops (faces) each call of the emotion model got, in order; the model itself
    still runs. Requests the module's ``pipeline`` fixture (tests/stream_helpers.py), so a test
    module takes both: ``pipeline = streams.pipeline`` and
    ``classify_calls = pipeline_helpers.classify_calls``."""
    return count_calls(monkeypatch, pipeline.classifier, "classify_crops")


def count_calls(monkeypatch, obj: object, name: str) -> list[int]:
    """Patch ``obj.name`` to record the length of its argument per call (crops, frames), in
    order; the real method still runs."""
    calls: list[int] = []
    real = getattr(obj, name)

    def counted(items):
        calls.append(len(items))
        return real(items)

    monkeypatch.setattr(obj, name, counted)
    return calls


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) the decoder will produce, from the header (classpulse.jpeg_header);
    BadFrame if the file is not a cleanly laid out JPEG (as ``decode_jpeg`` raises)."""
    try:
        return jpeg_size(data)
    except JpegHeaderError as exc:
        raise BadFrame(exc.reason, str(exc)) from exc
