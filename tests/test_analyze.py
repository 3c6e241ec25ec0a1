"""`classpulse analyze`: JSON Lines contract, image kinds, videos, annotation, bad files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from classpulse.cli import main

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    astro_rgb = skdata.astronaut()
    astro = cv2.cvtColor(astro_rgb, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "astronaut.jpg"), astro)
    # PNG with alpha: the person opaque, the right half fully transparent.
    rgba = cv2.cvtColor(astro, cv2.COLOR_BGR2BGRA)
    rgba[:, 380:, 3] = 0
    cv2.imwrite(str(folder / "alpha.png"), rgba)
    cv2.imwrite(str(folder / "grey.png"), skdata.camera())
    cv2.imwrite(str(folder / "empty.png"), cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    (folder / "notes.txt").write_text("not media")
    # A 12-frame video: the astronaut drifting, then 4 frames without anyone.
    writer = cv2.VideoWriter(
        str(folder / "lesson.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (320, 240)
    )
    small = cv2.resize(astro, (240, 240))
    for i in range(12):
        frame = np.full((240, 320, 3), 100, np.uint8)
        if i < 8:
            frame[:, i * 8 : i * 8 + 240] = small
        writer.write(frame)
    writer.release()
    return folder


def run_cli(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_json_lines_follow_the_contract(media, capsys):
    code, records, _ = run_cli(
        capsys,
        "--json",
        media / "astronaut.jpg",
        media / "grey.png",
        media / "alpha.png",
        media / "empty.png",
    )
    assert code == 0
    assert [r["source"] for r in records] == [
        str(media / n) for n in ("astronaut.jpg", "grey.png", "alpha.png", "empty.png")
    ]
    astro, grey, alpha, empty = records
    for r in records:
        assert set(r) == {"source", "frame", "t", "faces"} and r["frame"] == 0 and r["t"] == 0.0
    (face,) = astro["faces"]
    assert set(face) == {"box", "score", "emotion", "probs"}
    assert list(face["probs"]) == LABELS
    assert abs(sum(face["probs"].values()) - 1) < 1e-4
    assert face["emotion"] == "happy" and face["probs"]["happy"] > 0.9
    x, y, w, h = face["box"]
    assert 150 < x < 200 and 50 < y < 100 and 80 < w < 130
    assert len(grey["faces"]) == 1  # a grey image is analysed like any other
    assert len(alpha["faces"]) == 1 and alpha["faces"][0]["emotion"] == "happy"
    assert empty["faces"] == []


def test_bad_files_fail_alone_and_set_the_exit_status(media, capsys):
    code, records, err = run_cli(
        capsys,
        "--json",
        media / "broken.jpg",
        media / "notes.txt",
        media / "missing.png",
        media / "astronaut.jpg",
    )
    assert code == 1
    assert [r["source"] for r in records] == [str(media / "astronaut.jpg")]
    assert f"error: {media / 'broken.jpg'}:" in err
    assert f"error: {media / 'notes.txt'}:" in err
    assert f"error: {media / 'missing.png'}: no such file" in err


def test_video_gives_one_record_per_frame_and_a_summary(media, capsys):
    code, records, err = run_cli(capsys, "--json", "--every", "2", media / "lesson.avi")
    assert code == 0
    assert [r["frame"] for r in records] == [0, 2, 4, 6, 8, 10]
    assert [r["t"] for r in records] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [len(r["faces"]) for r in records] == [1, 1, 1, 1, 0, 0]
    summary = json.loads(err.split("summary ", 1)[1].splitlines()[0])
    assert summary["frames_analysed"] == 6 and summary["frames_without_face"] == 2
    assert summary["share_by_emotion"]["happy"] == 1.0


def test_annotate_writes_copies_with_boxes(media, tmp_path, capsys):
    out = tmp_path / "annotated"
    assert (
        main(
            [
                "analyze",
                "--annotate",
                str(out),
                str(media / "astronaut.jpg"),
                str(media / "lesson.avi"),
            ]
        )
        == 0
    )
    image = cv2.imread(str(out / "astronaut.annotated.jpg"))
    original = cv2.imread(str(media / "astronaut.jpg"))
    assert image.shape == original.shape
    # Box drawn in green around the face, the rest left alone.
    assert (np.abs(image.astype(int) - original).sum(2) > 60).mean() < 0.05
    assert image[70:180, 170:290, 1].max() >= 190
    cap = cv2.VideoCapture(str(out / "lesson.annotated.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()


def test_text_output_is_readable(media, capsys):
    code = main(["analyze", str(media / "astronaut.jpg")])
    out = capsys.readouterr().out
    assert code == 0 and "1 face(s): happy" in out
