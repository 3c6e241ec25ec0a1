"""Calibrated confidence (issue 19): temperature scaling, ECE and reliability, the metadata
contract, the worker applying it and publishing it, and `classpulse evaluate` on face photos
through the service's own detector → crop → classifier path.

The only labelled faces here are the repository's own images: scikit-image's astronaut (one
smiling face: labelled happy) and cameraman (one face, no expression shown: labelled neutral).
They test that the path works, not how accurate a model is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import redis.asyncio as aioredis
import skimage.data

from classpulse import contracts as c
from classpulse.modelmeta import Calibration, ModelContract, ModelContractError, read_onnx_metadata
from classpulse.settings import DEFAULT_UNCERTAIN_BELOW, Settings
from tests.calibration_helpers import MINI, REPO, overconfident
from training.calibrate import (
    calibration_for,
    confidence_threshold,
    ece,
    fit_temperature,
    reliability,
    softmax_t,
    write_calibrated,
)
from worker.classifier import EmotionClassifier
from worker.runtime import OnnxModel

BIG = REPO / "models" / "emotion_big_xception.onnx"
REFERENCE = REPO / "tests" / "data" / "reference" / "mini_xception_keras.npz"


# --- the arithmetic ---------------------------------------------------------------------------


def test_fit_temperature_recovers_a_known_temperature_and_lowers_ece():
    z, y = overconfident(4000, 2.5)
    t = fit_temperature(z, y)
    assert abs(t - 2.5) < 0.25
    assert ece(softmax_t(z, t), y) < ece(softmax_t(z, 1.0), y) / 3
    # Already calibrated: T stays about 1.
    z1, y1 = overconfident(4000, 1.0, seed=1)
    assert abs(fit_temperature(z1, y1) - 1.0) < 0.1


def test_reliability_bins_and_ece_from_known_numbers():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    y = np.array([0, 1, 0, 0])
    table = reliability(probs, y, bins=15)
    assert len(table) == 15 and sum(b["count"] for b in table) == 4
    top = next(b for b in table if b["count"] and b["lo"] > 0.9)
    assert (top["count"], top["accuracy"]) == (2, 0.5)
    # |0.5 - 0.95| for half the images, |1.0 - 0.55| for the other half.
    assert math.isclose(ece(probs, y, bins=15), 0.5 * 0.45 + 0.5 * 0.45)


def test_confidence_threshold_guarantees_the_target_on_the_set():
    conf = np.linspace(0.5, 0.99, 200)
    probs = np.stack([conf, 1 - conf], 1)  # top label 0 throughout
    rng = np.random.default_rng(3)
    y = (rng.random(200) >= conf).astype(int)  # right (0) with probability = confidence
    c_, acc, share = confidence_threshold(probs, y, 0.8, min_count=30)
    above = probs[:, 0] >= c_
    assert acc >= 0.8 and math.isclose(acc, float((y[above] == 0).mean()))
    assert math.isclose(share, above.mean())
    assert confidence_threshold(probs, y, 0.999, min_count=30) is None  # nothing reaches it


def test_calibration_metadata_round_trip_and_absence():
    z, y = overconfident(600, 2.0)
    cal = calibration_for(softmax_t(z, 1.0), y, "synthetic", 0.7)
    meta = cal.to_metadata()
    assert float(meta["classpulse.temperature"]) == cal.temperature
    assert meta["classpulse.calibration_set"] == "synthetic"
    assert meta["classpulse.calibration_size"] == "600"
    assert Calibration.from_metadata(meta) == cal
    assert cal.ece_after < cal.ece_before and cal.nll_after < cal.nll_before
    # The shipped models carry no temperature: not calibrated, and nothing may claim it.
    shipped = ModelContract.from_metadata(read_onnx_metadata(MINI))
    assert shipped.calibration is None
    contract = dataclasses.replace(shipped, calibration=cal)
    assert ModelContract.from_metadata(contract.to_metadata()) == contract
    with pytest.raises(ModelContractError, match="temperature must be positive"):
        Calibration.from_metadata(meta | {"classpulse.temperature": "-1"})


# --- the worker applies and publishes it ---------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_mini(tmp_path_factory) -> tuple[Path, Calibration]:
    """The shipped mini-Xception with a temperature in its metadata (weights untouched)."""
    z, y = overconfident(500, 1.8)
    cal = dataclasses.replace(
        calibration_for(softmax_t(z, 1.0), y, "synthetic test set", 0.6), temperature=1.8
    )
    out = tmp_path_factory.mktemp("cal") / "mini_calibrated.onnx"
    write_calibrated(MINI, out, cal)
    return out, cal


def test_calibrated_copy_keeps_the_weights_and_the_worker_applies_t(calibrated_mini):
    path, cal = calibrated_mini
    a, b = onnx.load(str(MINI)), onnx.load(str(path))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()  # graph and weights
    crops = np.load(REFERENCE)["inputs"][:40]
    raw = EmotionClassifier([OnnxModel(MINI, providers=("cpu",))]).classify_crops(crops)
    clf = EmotionClassifier([OnnxModel(path, providers=("cpu",))])
    got = clf.classify_crops(crops)
    z = np.log(raw.astype(np.float64)) / 1.8
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert np.abs(got - want).max() < 1e-5
    assert (got.argmax(1) == raw.argmax(1)).all()
    assert (got.max(1) <= raw.max(1) + 1e-6).all()  # T > 1 only softens
    # Ensemble: each member calibrated by its own T, then averaged.
    big = OnnxModel(BIG, providers=("cpu",))
    ens = EmotionClassifier([OnnxModel(path, providers=("cpu",)), big])
    big_raw = EmotionClassifier([big]).classify_crops(crops)
    assert np.allclose(ens.classify_crops(crops), (got + big_raw) / 2, atol=1e-6)


def test_published_calibration_and_threshold(calibrated_mini):
    path, cal = calibrated_mini
    one = EmotionClassifier([OnnxModel(path, providers=("cpu",))])
    info = json.loads(one.published()["calibration"])
    assert info["calibrated"] and info["dataset"] == "synthetic test set"
    assert info["size"] == 500 and len(info["reliability"]) == 15
    threshold = cal.uncertain_below
    assert threshold is not None
    assert info["threshold"] == {"uncertain_below": threshold, "source": "calibration"}
    assert float(one.published(0.55)["uncertain_below"]) == 0.55  # the setting overrides
    shipped = EmotionClassifier([OnnxModel(MINI, providers=("cpu",))])
    info = json.loads(shipped.published()["calibration"])
    assert not info["calibrated"] and "no temperature" in info["why"]
    assert float(shipped.published()["uncertain_below"]) == DEFAULT_UNCERTAIN_BELOW
    ens = EmotionClassifier(
        [OnnxModel(path, providers=("cpu",)), OnnxModel(BIG, providers=("cpu",))]
    )
    assert not json.loads(ens.published()["calibration"])["calibrated"]


def test_worker_publishes_it_and_the_gateway_reads_it(calibrated_mini, clean_redis, redis_url):
    from app.snapshot import model_calibration
    from tests.pipeline_helpers import InferenceWorker
    from worker.pipeline import FramePipeline

    path, cal = calibrated_mini
    settings = Settings(providers=["cpu"], emotion_model=path, redis_url=redis_url)
    worker = InferenceWorker(settings, clean_redis, FramePipeline.from_settings(settings))
    worker.setup()
    assert float(clean_redis.hget(c.MODEL_INFO_KEY, "uncertain_below")) == cal.uncertain_below

    async def read() -> dict | None:
        r = aioredis.from_url(redis_url)
        try:
            return await model_calibration(r)
        finally:
            await r.aclose()

    info = asyncio.run(read())
    assert info is not None and info["calibrated"] and info["temperature"] == 1.8


# --- evaluate on faces ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> Path:
    """An ImageFolder from the repository's own photos, labelled by what they show."""
    root = tmp_path_factory.mktemp("faces")
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    camera = skimage.data.camera()
    (root / "happy").mkdir()
    (root / "neutral").mkdir()
    cv2.imwrite(str(root / "happy" / "astronaut.jpg"), astronaut)
    cv2.imwrite(str(root / "happy" / "astronaut_mirrored.png"), astronaut[:, ::-1])
    cv2.imwrite(str(root / "happy" / "astronaut_small.jpg"), cv2.resize(astronaut, (320, 320)))
    cv2.imwrite(str(root / "neutral" / "cameraman.png"), camera)
    # A labelled frame with no face in it (the student looked away): listed, not guessed.
    rocket = cv2.cvtColor(skimage.data.rocket(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(root / "neutral" / "rocket.jpg"), rocket)
    return root


def _run(*argv, capsys):
    from tests.training_helpers import run

    return run(*argv, capsys=capsys)


def test_evaluate_a_face_folder_through_the_pipeline(face_folder, tmp_path, capsys):
    out = tmp_path / "eval"
    code, res, err = _run(
        "evaluate",
        "--data",
        face_folder,
        "--model",
        MINI,
        "--extra-model",
        BIG,
        "--out",
        out,
        capsys=capsys,
    )
    assert code == 0, err
    assert (res["kind"], res["images"], res["n"]) == ("faces", 5, 4)
    assert res["no_face"] == ["neutral/rocket.jpg"]
    assert (out / "no_face.txt").read_text() == "neutral/rocket.jpg\n"
    assert set(res["per_class_accuracy"]) >= {"happy", "neutral"}
    assert res["calibrated"] == [False, False] and res["ece_after"] is None
    for name in ("confusion_matrix.png", "reliability.png", "classification_report.txt"):
        assert (out / name).stat().st_size > 0
    cm = json.loads((out / "confusion_matrix.json").read_text())["matrix"]
    assert sum(map(sum, cm)) == 4
    rel = json.loads((out / "reliability.json").read_text())
    assert rel["bins"] == 15 and sum(b["count"] for b in rel["tables"]["as shipped (T = 1)"]) == 4
    predictions = json.loads((out / "predictions.json").read_text())
    assert {p["file"] for p in predictions} == {
        "happy/astronaut.jpg",
        "happy/astronaut_mirrored.png",
        "happy/astronaut_small.jpg",
        "neutral/cameraman.png",
    }
    # The smiling astronaut is read as happy by the production path, each photo of her.
    assert all(p["predicted"] == "happy" for p in predictions if p["true"] == "happy")
    rows = res["ensemble"]
    assert [r["model"] for r in rows][:2] == [MINI.name, BIG.name] and "(mean)" in rows[2]["model"]
    assert all(r["ms_per_face"] > 0 and 0 <= r["ece"] <= 1 for r in rows)
    assert "ms/face" in (out / "ensemble.txt").read_text()


def test_evaluate_crops_only_and_calibrate_on_crops(tmp_path, capsys, calibrated_mini):
    """Already-cropped faces (the reference crops of the converters: astronaut and cameraman)."""
    crops = np.load(REFERENCE)["inputs"]
    for label, part in (("happy", crops[:80:4]), ("neutral", crops[80:160:4])):
        (tmp_path / "crops" / label).mkdir(parents=True)
        for i, img in enumerate(part):
            cv2.imwrite(str(tmp_path / "crops" / label / f"{i}.png"), img)
    path, cal = calibrated_mini
    code, res, err = _run(
        "evaluate",
        "--data",
        tmp_path / "crops",
        "--model",
        path,
        "--crops-only",
        "--out",
        tmp_path / "eval",
        capsys=capsys,
    )
    assert code == 0, err
    assert (res["kind"], res["n"], res["no_face"]) == ("crops", 40, None)
    assert res["temperature"] == [1.8] and res["ece_after"] is not None
    rel = json.loads((tmp_path / "eval" / "reliability.json").read_text())
    assert set(rel["tables"]) == {"as shipped (T = 1)", "temperature-scaled"}
    # calibrate writes the fitted temperature and what it was fitted on.
    code, res, err = _run(
        "calibrate",
        "--model",
        MINI,
        "--data",
        tmp_path / "crops",
        "--crops-only",
        "--out",
        tmp_path / "cal.onnx",
        "--dataset-name",
        "reference crops",
        capsys=capsys,
    )
    assert code == 0, err
    got = ModelContract.from_metadata(read_onnx_metadata(tmp_path / "cal.onnx")).calibration
    assert got is not None and got.dataset == "reference crops" and got.size == 40
    assert got.temperature == res["calibration"]["temperature"] and got.nll_after <= got.nll_before


def test_evaluate_and_calibrate_on_fer2013_csv(tmp_path, capsys):
    from tests.training_helpers import write_csv

    data = write_csv(tmp_path / "fer.csv", per_class=(1, 6, 4))
    code, res, err = _run(
        "calibrate", "--model", MINI, "--data", data, "--out", tmp_path / "m.onnx", capsys=capsys
    )
    assert code == 0, err
    cal = res["calibration"]
    assert (cal["dataset"], cal["size"]) == ("fer.csv:PublicTest", 42)
    code, res, err = _run(
        "evaluate",
        "--data",
        data,
        "--model",
        tmp_path / "m.onnx",
        "--extra-model",
        BIG,
        "--out",
        tmp_path / "e",
        capsys=capsys,
    )
    assert code == 0, err
    assert (res["kind"], res["split"], res["n"]) == ("fer2013", "PrivateTest", 28)
    assert res["ece_before"] is not None and res["ece_after"] is not None
    assert res["ensemble"][0]["calibrated"] and not res["ensemble"][1]["calibrated"]


def test_aggregator_follows_the_published_threshold_unless_set(settings, clean_redis, engine):
    from tests.pipeline_helpers import Aggregator

    assert settings.uncertain_below is None  # default: follow the model
    agg = Aggregator(settings, clean_redis, engine)
    assert agg.uncertain_below() == DEFAULT_UNCERTAIN_BELOW  # no worker has published yet
    clean_redis.hset(c.MODEL_INFO_KEY, "uncertain_below", "0.55")
    agg._threshold_at = -1e9  # as if THRESHOLD_READ_S had passed
    assert agg.uncertain_below() == 0.55
    pinned = Aggregator(settings.model_copy(update={"uncertain_below": 0.3}), clean_redis, engine)
    assert pinned.uncertain_below() == 0.3  # the setting overrides the model's
