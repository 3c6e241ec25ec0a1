"""Training pipeline: data validation, the papers' sanity checks, train → export → evaluate.

Everything runs on tiny generated datasets on the CPU; the whole file takes seconds.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")  # the optional `train` extra

from classpulse.cli import train as cli  # noqa: E402
from classpulse.modelmeta import ModelContract  # noqa: E402
from tests.training_helpers import faces, run, write_csv  # noqa: E402
from training import archs  # noqa: E402
from training.data import LABELS, DataError, load_split, load_train_val  # noqa: E402
from training.evaluate import metrics  # noqa: E402
from training.export import ExportError, export_onnx  # noqa: E402
from training.train import augment, class_weights, train_step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    # Other suites share two cores; tiny models gain little from a second thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_folders(root: Path, per_class=(6, 2)) -> Path:
    for seed, (split, n) in enumerate(zip(("train", "test"), per_class, strict=True)):
        labels = np.repeat(np.arange(7), n)
        for i, (label, img) in enumerate(zip(labels, faces(labels, seed), strict=True)):
            folder = root / split / LABELS[label]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i}.png"), img)
    return root


# --- data validation --------------------------------------------------------------------------


def test_csv_loads_splits_and_resizes(tmp_path):
    path = write_csv(tmp_path / "fer.csv")
    test = load_split(path, "PrivateTest", 64)
    assert test.images.shape == (14, 64, 64) and test.images.dtype == np.uint8
    assert test.counts().tolist() == [2] * 7
    train, val = load_train_val(path, 48, 0.1, seed=0)
    assert (len(train), len(val)) == (42, 14) and "PublicTest" in val.source


def _corrupt(path: Path, line: int, column: int, value: str) -> None:
    rows = list(csv.reader(path.open()))
    rows[line - 1][column] = value
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (1, "1 2 3", "line 3: 3 pixel values, expected 2304"),
        (1, " ".join(["300"] * 2304), "line 3: pixel values must be in 0..255"),
        (1, "a " * 2304, "line 3: not a number"),
        (0, "7", "line 3: emotion 7 is not in 0..6"),
        (2, "Validation", "line 3: Usage 'Validation' is not one of"),
    ],
)
def test_csv_row_errors_name_the_line(tmp_path, column, value, message):
    path = write_csv(tmp_path / "fer.csv")
    _corrupt(path, 3, column, value)
    with pytest.raises(DataError, match=message):
        load_split(path, "Training", 48)


def test_csv_missing_column_and_empty_split(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", header=("label", "pixels", "Usage"))
    with pytest.raises(DataError, match=r"missing column\(s\) emotion"):
        load_split(bad, "Training", 48)
    no_test = write_csv(tmp_path / "fer.csv", per_class=(3, 1, 0))
    with pytest.raises(DataError, match="split PrivateTest has no rows"):
        load_split(no_test, "PrivateTest", 48)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_split(no_test, "dev", 48)


def test_folders_load_and_hold_out_validation(tmp_path):
    root = write_folders(tmp_path / "ds")
    train, val = load_train_val(root, 64, 0.2, seed=0)
    assert (len(train), len(val)) == (34, 8) and train.images.shape[1:] == (64, 64)
    assert "held out" in val.source
    assert len(load_split(root, "test", 48)) == 14  # folder names work as split names


def test_folder_errors_name_the_file_or_folder(tmp_path):
    root = write_folders(tmp_path / "ds")
    (root / "train" / "surprised").mkdir()
    with pytest.raises(DataError, match=r"surprised.*unknown label folder"):
        load_split(root, "train", 48)
    (root / "train" / "surprised").rmdir()
    (root / "train" / "sad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        load_split(root, "train", 48)
    empty = tmp_path / "empty"
    (empty / "train" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_split(empty, "train", 48)
    with pytest.raises(DataError, match="no test/ folder"):
        load_split(empty, "PrivateTest", 48)


def test_unknown_arch_is_refused(tmp_path, capsys):
    assert set(cli.ARCH_NAMES) == set(archs.ARCHS)  # argparse choices cannot drift
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; choose from"):
        archs.build("resnet")
    with pytest.raises(SystemExit):
        run("train", "--data", tmp_path, "--arch", "resnet", capsys=capsys)
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_cli_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; import argparse, classpulse.cli.train as c;"
        "c.register(argparse.ArgumentParser().add_subparsers()); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# --- the papers' sanity checks ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(archs.ARCHS))
def test_initial_loss_is_ln7(name):
    torch.manual_seed(0)
    model, side = archs.build(name).train(), archs.input_size(name)
    x = torch.randint(0, 256, (70, side, side), dtype=torch.uint8)
    y = torch.arange(70) % 7  # balanced
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(((x.float() - 127.5) / 127.5)[:, None]), y)
    assert abs(loss.item() - math.log(7)) < 0.15


@pytest.mark.parametrize("name", ["mini_xception", "simple_cnn"])
def test_overfits_a_small_subset(name):
    """32 noise images with arbitrary labels are memorised in a few dozen steps."""
    torch.manual_seed(0)
    model, side = archs.build(name), archs.input_size(name)
    for m in model.modules():  # no regularisation, as in the papers' check
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.randint(0, 256, (32, side, side), dtype=torch.uint8), torch.arange(32) % 7
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(60):
        loss, correct = train_step(model.train(), opt, x, y, loss_fn, None)
        if correct == 32 and loss < 0.3:
            break
    assert correct == 32 and loss < 0.3


def test_augment_is_seeded_and_keeps_range():
    x = torch.rand(8, 1, 48, 48) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert a.min() >= -1 and a.max() <= 1  # bilinear + border padding never overshoots


def test_class_weights_favour_rare_classes():
    counts = [3995, 436, 4097, 7215, 4830, 3171, 4965]  # FER2013 Training
    w = class_weights(np.repeat(np.arange(7), counts))
    assert w[1] > 10 * w[3]
    assert float((w * torch.tensor(counts)).sum()) / sum(counts) == pytest.approx(1.0)


def test_metrics_from_known_predictions():
    labels = ("a", "b", "c")
    m = metrics(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0]), labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )


# --- end to end through the CLI handlers ------------------------------------------------------


def test_csv_train_resume_export_evaluate(tmp_path, capsys):
    data, out = write_csv(tmp_path / "fer.csv"), tmp_path / "run"
    code, res, err = run(
        "train", "--data", data, "--epochs", 2, "--out", out, "--batch-size", 16, capsys=capsys
    )
    assert code == 0, err
    assert res["arch"] == "mini_xception" and res["epochs"] == 2
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["labels"] == list(LABELS) and state["config"]["epochs"] == 2
    assert state["input"] == {
        "height": 64,
        "width": 64,
        "colour": "grey",
        "mean": 127.5,
        "std": 127.5,
    }
    assert {"model", "optimizer", "scheduler", "epoch", "history"} <= set(state)

    code, res, err = run("train", "--resume", out / "last.pt", "--epochs", 3, capsys=capsys)
    assert code == 0, err
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    assert state["config"]["batch_size"] == 16  # the run's own config survives the resume

    model = tmp_path / "model.onnx"
    code, res, err = run(
        "export-onnx",
        "--checkpoint",
        out / "best.pt",
        "--out",
        model,
        "--data",
        data,
        capsys=capsys,
    )
    assert code == 0, err
    assert res["max_abs_diff"] <= 1e-5 and res["parity_inputs"] == 24
    proto = onnx.load(str(model))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in proto.metadata_props}
    contract = ModelContract.from_metadata(meta)
    assert contract.labels == LABELS and contract.layout == "NHWC"
    assert (contract.input_height, contract.mean, contract.std) == (64, 127.5, 127.5)
    assert contract.version.startswith("trained-") and contract.source["arch"] == "mini_xception"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probs"]
    probs = session.run(None, {"input": np.zeros((3, 64, 64, 1), np.float32)})[0]
    assert probs.shape == (3, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # The service's own loader takes it as it is (what CLASSPULSE_EMOTION_MODEL points at).
    from worker.classifier import EmotionClassifier
    from worker.runtime import OnnxModel

    # With --data, the export fitted a temperature on the held-out split (PublicTest), and the
    # service applies it: softmax(log(p) / T) of the graph's own probabilities.
    cal = contract.calibration
    assert cal is not None and res["calibration"]["temperature"] == cal.temperature
    assert (cal.dataset, cal.size, cal.bins) == ("fer.csv:PublicTest", 14, 15)
    assert cal.nll_after <= cal.nll_before + 1e-9 and len(cal.reliability) == 15
    service = EmotionClassifier([OnnxModel(model, providers=("cpu",))])
    crops = faces(np.arange(7), side=64)
    assert service.labels == LABELS
    raw = session.run(None, {"input": ((crops.astype(np.float32) - 127.5) / 127.5)[..., None]})[0]
    z = np.log(raw.astype(np.float64)) / cal.temperature
    tempered = np.exp(z - z.max(1, keepdims=True))
    tempered /= tempered.sum(1, keepdims=True)
    assert np.allclose(service.classify_crops(crops), tempered, atol=1e-5)
    assert (service.classify_crops(crops).argmax(1) == raw.argmax(1)).all()  # same top label
    raw_service = EmotionClassifier([OnnxModel(model, providers=("cpu",))], calibrated=False)
    assert np.allclose(raw_service.classify_crops(crops), raw, atol=1e-6)

    summaries = {}
    for name in (out / "best.pt", model):
        report = tmp_path / f"eval-{name.suffix[1:]}"
        code, res, err = run(
            "evaluate", "--data", data, "--model", name, "--out", report, capsys=capsys
        )
        assert code == 0, err
        assert res["n"] == 14 and res["split"] == "PrivateTest"
        assert set(res["per_class_accuracy"]) == set(LABELS)
        for file in (
            "classification_report.txt",
            "confusion_matrix.png",
            "confusion_matrix.json",
            "metrics.json",
        ):
            assert (report / file).stat().st_size > 0
        cm = json.loads((report / "confusion_matrix.json").read_text())["matrix"]
        assert sum(map(sum, cm)) == 14
        summaries[name.suffix] = res
    assert (tmp_path / "eval-pt" / "training_curves.png").exists()  # the checkpoint's history
    assert summaries[".pt"]["accuracy"] == summaries[".onnx"]["accuracy"]


def test_folders_train_deterministically_and_evaluate(tmp_path, capsys):
    data = write_folders(tmp_path / "ds")
    histories = []
    for run_dir in ("a", "b"):
        code, res, err = run(
            "train",
            "--data",
            data,
            "--arch",
            "simple_cnn",
            "--epochs",
            2,
            "--out",
            tmp_path / run_dir,
            "--seed",
            3,
            capsys=capsys,
        )
        assert code == 0, err
        state = torch.load(tmp_path / run_dir / "last.pt", weights_only=True)
        histories.append(state["history"])
    assert histories[0] == histories[1]  # same seed, same run
    code, res, err = run(
        "evaluate",
        "--data",
        data,
        "--model",
        tmp_path / "a" / "best.pt",
        "--split",
        "test",
        capsys=capsys,
    )
    assert code == 0, err
    assert res["n"] == 14 and 0 <= res["accuracy"] <= 1


def test_cli_reports_data_errors_with_exit_code(tmp_path, capsys):
    data = write_csv(tmp_path / "fer.csv", header=("emotion", "pixel", "Usage"))
    code, _, err = run("train", "--data", data, "--out", tmp_path / "r", capsys=capsys)
    assert code == 2 and "missing column(s) pixels" in err
    code, _, err = run("train", "--out", tmp_path / "r", capsys=capsys)
    assert code == 2 and "--data is required" in err


def test_export_fails_and_removes_the_file_without_parity(tmp_path, capsys):
    data, out = write_folders(tmp_path / "ds"), tmp_path / "run"
    assert (
        run(
            "train",
            "--data",
            data,
            "--arch",
            "simple_cnn",
            "--epochs",
            1,
            "--out",
            out,
            capsys=capsys,
        )[0]
        == 0
    )
    model = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(out / "best.pt", model, atol=-1.0)  # no output can meet this
    assert not model.exists()


# --- the shipped model ------------------------------------------------------------------------


def test_mini_xception_from_shipped_onnx_matches_onnxruntime():
    """Same module names, folded BN and TF's asymmetric "same" pooling → the shipped outputs."""
    session = ort.InferenceSession(str(archs.SHIPPED_ONNX), providers=["CPUExecutionProvider"])
    model = archs.build("mini_xception")
    archs.load_shipped(model)
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-1, 1, (8, 64, 64, 1)),
            (faces(np.arange(7), side=64)[..., None] - 127.5) / 127.5,
        ]
    )
    x = x.astype(np.float32)
    expected = session.run(None, {"input": x})[0]
    with torch.no_grad():
        got = torch.softmax(model.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)), 1).numpy()
    assert np.abs(got - expected).max() <= 1e-5
    # Fine-tuning re-inflates the BNs to the data's statistics without changing the function.
    crops = torch.from_numpy(faces(np.arange(64) % 7, side=64)).float()
    archs.recalibrate_bn(model, ((crops - 127.5) / 127.5)[:, None])
    with torch.no_grad():
        got = torch.softmax(model.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)), 1).numpy()
    assert np.abs(got - expected).max() <= 1e-5


def test_fine_tune_from_shipped_and_evaluate_shipped(tmp_path, capsys):
    data = write_csv(tmp_path / "fer.csv", per_class=(3, 1, 2))
    code, res, err = run(
        "train",
        "--data",
        data,
        "--init",
        "shipped",
        "--epochs",
        1,
        "--out",
        tmp_path / "ft",
        capsys=capsys,
    )
    assert code == 0, err
    code, res, err = run(
        "evaluate",
        "--data",
        data,
        "--model",
        archs.SHIPPED_ONNX,
        "--out",
        tmp_path / "shipped",
        capsys=capsys,
    )
    assert code == 0, err
    assert res["n"] == 14 and "accuracy" in res
    code, _, err = run(
        "train",
        "--data",
        data,
        "--arch",
        "simple_cnn",
        "--init",
        "shipped",
        "--out",
        tmp_path / "x",
        capsys=capsys,
    )
    assert code == 2 and "mini_xception" in err


def test_export_without_a_held_out_split_stays_not_calibrated(tmp_path, capsys):
    data, out = write_folders(tmp_path / "ds"), tmp_path / "run"  # train/ and test/, no val/
    code, _, err = run(
        "train",
        "--data",
        data,
        "--arch",
        "simple_cnn",
        "--epochs",
        1,
        "--out",
        out,
        capsys=capsys,
    )
    assert code == 0, err
    model = tmp_path / "m.onnx"
    code, res, err = run(
        "export-onnx",
        "--checkpoint",
        out / "best.pt",
        "--out",
        model,
        "--data",
        data,
        "--split",
        "test",
        capsys=capsys,
    )
    assert code == 0, err
    assert res["calibration"] is None and "no val/ folder" in res["not_calibrated"]
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert "classpulse.temperature" not in meta
    assert ModelContract.from_metadata(meta).calibration is None
