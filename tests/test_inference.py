"""The inference core on real images: runtime wrapper, BlazeFace decoding, crops, batching."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from skimage import data as skdata

from tests.pipeline_helpers import jpeg_dimensions
from worker.classifier import EmotionClassifier, square_crop_box
from worker.detector import FaceDetector, ssd_anchors
from worker.pipeline import BadFrame, FramePipeline, decode_jpeg
from worker.runtime import GPUUnavailableError, OnnxModel, choose_providers

from .conftest import MODELS

# Faces a person sees in scikit-image's photos (x, y, w, h), read off the images.
ASTRONAUT_FACE = (175, 70, 105, 105)
CAMERA_FACE = (205, 124, 69, 69)


def bgr(rgb_or_grey: np.ndarray) -> np.ndarray:
    if rgb_or_grey.ndim == 2:
        return cv2.cvtColor(rgb_or_grey, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR)


def iou(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def detector_model() -> OnnxModel:
    return OnnxModel(MODELS / "face_detection_full_range.onnx", providers=["cpu"])


@pytest.fixture(scope="module")
def emotion_model() -> OnnxModel:
    return OnnxModel(MODELS / "emotion_mini_xception.onnx", providers=["cpu"])


@pytest.fixture(scope="module")
def pipeline(detector_model, emotion_model) -> FramePipeline:
    return FramePipeline(FaceDetector(detector_model), EmotionClassifier([emotion_model]))


# --- runtime --------------------------------------------------------------------------------
def test_provider_choice_keeps_preference_order_and_cpu_last():
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["cuda", "cpu"], available) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    # TensorRT only when asked for.
    assert choose_providers(["tensorrt", "cuda"], available) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["cuda"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_require_gpu_fails_when_cuda_is_listed_but_not_obtained(monkeypatch):
    # Fake only what this machine lacks: an onnxruntime build that lists CUDA. The session then
    # silently runs on the CPU, which the wrapper must catch when a GPU is required.
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(GPUUnavailableError, match="GPU was required"):
        OnnxModel(
            MODELS / "emotion_mini_xception.onnx", providers=["cuda", "cpu"], require_gpu=True
        )
    model = OnnxModel(MODELS / "emotion_mini_xception.onnx", providers=["cuda", "cpu"])
    assert model.providers == ["CPUExecutionProvider"] and not model.uses_gpu


def test_model_contract_is_read_from_metadata(emotion_model, detector_model):
    c = emotion_model.contract
    assert c.labels == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert (c.input_height, c.input_width, c.colour) == (64, 64, "grey")
    assert detector_model.contract.kind == "face_detector"
    with pytest.raises(ValueError, match="expected a batch"):
        emotion_model.predict(np.zeros((1, 48, 48, 1), np.float32))


def test_model_without_contract_is_refused(tmp_path):
    import onnx

    model = onnx.load(str(MODELS / "emotion_mini_xception.onnx"))
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="no ClassPulse contract"):
        OnnxModel(path, providers=["cpu"])


# --- detector -------------------------------------------------------------------------------
def test_anchor_counts_match_mediapipe():
    assert ssd_anchors(192, [4], [1], 0.5).shape == (2304, 2)
    assert ssd_anchors(128, [8, 16, 16, 16], [2, 2, 2, 2], 0.5).shape == (896, 2)


@pytest.mark.parametrize("image,expected", [("astronaut", ASTRONAUT_FACE), ("camera", CAMERA_FACE)])
def test_detector_finds_the_face_a_person_sees(detector_model, image, expected):
    frame = bgr(getattr(skdata, image)())
    faces = FaceDetector(detector_model).detect(frame)
    assert len(faces) == 1
    assert iou(faces[0].box, expected) > 0.7
    assert faces[0].keypoints.shape == (6, 2)
    # Both eyes lie inside the box, the right eye (subject's) left of the left eye in the image.
    x, y, w, h = faces[0].box
    (rx, ry), (lx, ly) = faces[0].keypoints[:2]
    assert x < rx < lx < x + w and y < ry < y + h and y < ly < y + h


def test_detector_boxes_follow_the_frame_through_letterbox(detector_model):
    det = FaceDetector(detector_model)
    astro = bgr(skdata.astronaut())
    # Same face placed in a wide and a tall frame: boxes must land where it was pasted.
    wide = np.full((300, 900, 3), 90, np.uint8)
    wide[20:280, 600:860] = cv2.resize(astro[40:300, 100:360], (260, 260))
    tall = np.full((900, 300, 3), 90, np.uint8)
    tall[500:760, 20:280] = wide[20:280, 600:860]
    for frame, (ox, oy) in ((wide, (600, 20)), (tall, (20, 500))):
        (face,) = det.detect(frame)
        expected = (ox + ASTRONAUT_FACE[0] - 100, oy + ASTRONAUT_FACE[1] - 40, 105, 105)
        assert iou(face.box, expected) > 0.65, (face.box, expected)


def two_people() -> np.ndarray:
    """A 640×480 'shared webcam' frame: the astronaut left, the camera man (smaller) right."""
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[100:360, 20:280] = bgr(skdata.astronaut())[20:280, 100:360]
    frame[120:360, 380:620] = cv2.resize(bgr(skdata.camera())[60:240, 150:330], (240, 240))
    return frame


def test_detector_sees_several_faces_and_respects_settings(detector_model):
    frame = two_people()
    faces = FaceDetector(detector_model).detect(frame)
    assert len(faces) == 2
    sizes = sorted(f.box[2] for f in faces)
    # A minimum face size between the two leaves only the larger face.
    faces = FaceDetector(detector_model, min_face_size=int(sum(sizes) / 2)).detect(frame)
    assert len(faces) == 1 and faces[0].box[2] == sizes[1]
    assert FaceDetector(detector_model, score_threshold=0.99).detect(frame) == []


@pytest.mark.parametrize("image", ["coffee", "coins", "rocket", "chelsea"])
def test_no_faces_in_pictures_without_people(detector_model, image):
    frame = bgr(getattr(skdata, image)())
    assert FaceDetector(detector_model).detect(frame) == []


# --- classifier -----------------------------------------------------------------------------
def test_square_crop_is_enlarged_and_clipped():
    assert square_crop_box((100, 100, 50, 40), 640, 480, 1.1) == (98, 93, 153, 148)
    assert square_crop_box((0, 0, 50, 50), 60, 60, 2.0) == (0, 0, 60, 60)


def test_batch_of_faces_equals_faces_one_by_one(emotion_model):
    clf = EmotionClassifier([emotion_model])
    grey = cv2.cvtColor(bgr(skdata.astronaut()), cv2.COLOR_BGR2GRAY)
    boxes = [ASTRONAUT_FACE, (150, 50, 150, 150), (200, 90, 60, 70)]
    crops = clf.crops(grey, boxes)
    together = clf.classify_crops(crops)
    alone = np.concatenate([clf.classify_crops(crops[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(together.sum(1), 1.0, atol=1e-5)
    assert clf.labels[int(np.argmax(together[0]))] == "happy"


def test_flip_average_is_symmetric(emotion_model):
    clf = EmotionClassifier([emotion_model], flip_average=True)
    grey = cv2.cvtColor(bgr(skdata.astronaut()), cv2.COLOR_BGR2GRAY)
    crop = clf.crops(grey, [ASTRONAUT_FACE])
    np.testing.assert_allclose(
        clf.classify_crops(crop), clf.classify_crops(crop[:, :, ::-1]), atol=1e-6
    )


def test_ensemble_refuses_models_with_other_labels(emotion_model, detector_model):
    with pytest.raises(ValueError, match="not an emotion classifier"):
        EmotionClassifier([emotion_model, detector_model])


# --- pipeline and frames --------------------------------------------------------------------
def test_pipeline_classifies_every_face_of_several_frames(pipeline):
    astro, cam = bgr(skdata.astronaut()), bgr(skdata.camera())
    frames = [astro, cam, bgr(skdata.coffee()), two_people()]
    results, timings = pipeline.analyze(frames, emotion=[True, True, True, False])
    assert [len(r) for r in results] == [1, 1, 0, 2]
    assert timings.faces == 4
    assert pipeline.labels[int(np.argmax(results[0][0].probs))] == "happy"
    assert results[3][0].probs is None  # emotion off for that frame: presence only


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def test_decode_accepts_real_jpeg_and_reads_its_header():
    frame = cv2.resize(bgr(skdata.astronaut()), (320, 240))
    data = encode(frame)
    assert jpeg_dimensions(data) == (320, 240)
    assert decode_jpeg(data).shape == (240, 320, 3)


def test_progressive_jpeg_is_accepted():
    frame = cv2.resize(bgr(skdata.astronaut()), (320, 240))
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert decode_jpeg(buf.tobytes()).shape == (240, 320, 3)


def bomb() -> bytes:
    """A valid-looking JPEG header declaring 60000×60000 pixels in a few hundred bytes."""
    data = bytearray(encode(np.zeros((16, 16, 3), np.uint8)))
    i = 2
    while not (data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2)):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "not_jpeg"),
        (b"hello world, not an image", "not_jpeg"),
        (lambda: encode(np.zeros((64, 64, 3), np.uint8), ".png"), "not_jpeg"),
        (lambda: encode(cv2.resize(bgr(skdata.astronaut()), (320, 240)))[:600], "corrupt"),
        (lambda: encode(np.zeros((8, 8, 3), np.uint8)), "too_small"),
        (bomb, "too_large"),
        (b"\xff\xd8\xff" + b"\x00" * 100, "corrupt"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(payload, reason):
    data = payload() if callable(payload) else payload
    with pytest.raises(BadFrame) as exc:
        decode_jpeg(data)
    assert exc.value.reason == reason
