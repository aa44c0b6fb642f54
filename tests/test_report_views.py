"""The run report's views that say what happened, not only what came out: the model's input beside each
mistake, the kept epoch on the curves, the searched range on the tuning scatter, the comparison with an earlier
run, the sortable per-class table."""

import classifier
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from dogbreed.reporting import html_kit, run_page
from PIL import Image


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (257, 257), (64, 501), (97, 96)])
def test_the_gallerys_crop_is_what_the_model_saw(size):
    """The report crops with PIL, the model with torchvision (the workflow's environment has no torch): the
    same pixels, for landscape, portrait, square and odd sizes."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    spec = classifier.preprocessing_spec(64, 73)
    seen = classifier.eval_transform(spec, on_device=True)(image)  # uint8 C×H×W, before normalising
    ours = torch.from_numpy(np.array(run_page.model_input(image, spec))).permute(2, 0, 1)
    assert ours.shape == seen.shape == (3, 64, 64)
    assert torch.equal(ours, seen)


def drawn(monkeypatch) -> dict:
    """Where the next figure the report saves is kept open for the test to look at (it is saved all the same)."""
    shown, save = {}, html_kit.save_figure
    monkeypatch.setattr(html_kit, "save_figure", lambda figure, path: shown.update(figure=figure) or save(figure, path))
    return shown


def test_the_gallery_shows_each_mistake_beside_the_models_input(tmp_path, monkeypatch):
    for name, size in (("wide.jpg", (320, 160)), ("tall.jpg", (160, 320))):
        Image.new("RGB", size, "white").save(tmp_path / name)
    worst = pd.DataFrame(
        {
            "path": ["wide.jpg", "tall.jpg"],
            "true_breed": ["A", "B"],
            "predicted_breed": ["B", "A"],
            "probability": [0.9, 0.8],
        }
    )
    figure_path = tmp_path / "misclassified.png"
    shown = drawn(monkeypatch)
    run_page.plot_gallery(worst, tmp_path, figure_path, classifier.preprocessing_spec(64, 73))
    mistakes = [mistake for mistake in shown["figure"].subfigs if mistake.axes]
    assert [mistake._suptitle.get_text() for mistake in mistakes] == [
        "true: A\npredicted: B (0.90)",
        "true: B\npredicted: A (0.80)",
    ]
    for mistake in mistakes:
        file, seen = mistake.axes
        assert seen.get_title() == "the model's input (64 px)" and seen.images[0].get_array().shape == (64, 64, 3)
        assert file.patches[0].get_width() == pytest.approx(160 * 64 / 73)  # the crop's square, in the file's pixels
    assert figure_path.stat().st_size > 0


def test_the_curves_mark_the_kept_epoch(tmp_path, monkeypatch):
    metrics = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "train_loss": [2.0, 1.5, 1.0, 0.5],
            "valid_loss": [2.1, 1.2, 1.4, 1.9],
            "train_accuracy": [0.3, 0.5, 0.7, 0.9],
            "valid_accuracy": [0.3, 0.6, 0.55, 0.5],
        }
    )
    shown = drawn(monkeypatch)
    run_page.plot_training_curves(metrics, tmp_path / "curves.png", {"epoch": 2, "why": "lowest valid_loss 1.2"})
    loss, accuracy = shown["figure"].axes
    for axis, value in ((loss, 1.2), (accuracy, 0.6)):
        (star,) = [line for line in axis.lines if line.get_label() == "kept: epoch 2"]
        assert list(star.get_xdata()) == [2] and list(star.get_ydata()) == [value]
    assert shown["figure"]._suptitle.get_text() == "the model keeps epoch 2 (lowest valid_loss 1.2)"


def test_the_tuning_scatter_shows_the_searched_range():
    trials = pd.DataFrame(
        {
            "trial": [0, 1],
            "status": ["Completed", "Completed"],
            "valid_accuracy": [0.5, 0.6],
            "lr": [0.005, 0.008],
            "batch_size": [16, 16],
        }
    )
    bounds = {
        "lr": {"type": "continuous", "min": 0.002, "max": 0.02, "scaling": "Logarithmic"},
        "batch_size": {"type": "categorical", "values": [16, 32, 64]},
    }
    figure, axis = plt.subplots()
    status, value = trials["status"], trials["valid_accuracy"]
    run_page._trial_scatter(figure, axis, trials, status, value, "valid_accuracy", "lr", "batch_size", bounds)
    lines = sorted(line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "--" and len(line.get_xdata()))
    assert lines == [0.002, 0.02] and axis.get_xscale() == "log"
    low, high = axis.get_xlim()
    assert low < 0.002 and high > 0.02  # both bounds in view, though the trials sit between them
    assert list(axis.get_yticks()) == [16, 32, 64]  # every value searched, not only those tried
    assert "search bounds" in [text.get_text() for text in axis.get_legend().get_texts()]
    plt.close(figure)


@pytest.mark.parametrize(
    "x, spec, tried, scale, lines",
    [
        # a linear range from 0: the spec's scale, not log because the tried values span over 20×
        (
            "weight_decay",
            {"type": "continuous", "min": 0.0, "max": 0.1, "scaling": "Linear"},
            [0.001, 0.09],
            "linear",
            [0.0, 0.1],
        ),
        # Auto: log for a positive range the trials spread over
        ("lr", {"type": "continuous", "min": 0.001, "max": 0.3, "scaling": "Auto"}, [0.002, 0.2], "log", [0.001, 0.3]),
        # categorical on x: its values as ticks, no bounds lines
        ("batch_size", {"type": "categorical", "values": [16, 64, 256, 512]}, [16, 512], "log", []),
    ],
)
def test_the_searched_range_follows_the_specs_scale(x, spec, tried, scale, lines, recwarn):
    trials = pd.DataFrame({"trial": [0, 1], "status": ["Completed"] * 2, "valid_accuracy": [0.5, 0.6], x: tried})
    figure, axis = plt.subplots()
    run_page._trial_scatter(
        figure, axis, trials, trials["status"], trials["valid_accuracy"], "valid_accuracy", x, None, {x: spec}
    )
    assert axis.get_xscale() == scale
    assert (
        sorted(line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "--" and len(line.get_xdata()))
        == lines
    )
    low, high = axis.get_xlim()
    assert low < min(tried) and high > max(tried) and (scale == "linear" or low > 0)
    if spec["type"] == "categorical":
        assert list(axis.get_xticks()) == spec["values"]
    assert not [w for w in recwarn if "xlim" in str(w.message)]  # no limit matplotlib refuses
    plt.close(figure)


def test_the_earlier_run_is_shown_beside_this_one():
    """tracking.earlier_final_run's answer (tests/test_tracking.py makes it from a real store) as the page shows it."""
    earlier = {
        "run_name": "train-abc",
        "started": "2026-12-01T10:00:00+00:00",
        "link": "run 0123 in sqlite:///mlflow.db",
        "metrics": {"test_accuracy": 0.80, "latency_p50_ms": 14.0, "latency_p99_ms": 50.0},
        "hyperparameters": {"lr": "0.01", "batch_size": "16", "epochs": "6"},
        "this": {
            "metrics": {"test_accuracy": 0.85, "test_top5_accuracy": 0.99, "latency_p50_ms": 12.0},
            "hyperparameters": {"lr": "0.007", "batch_size": "16", "epochs": "6", "augment": "False"},
        },
    }
    table = run_page.comparison_table(earlier)
    assert table.values.tolist() == [
        ["test accuracy", 0.85, 0.80],  # the numbers both runs have
        ["latency p50 ms", 12.0, 14.0],
        ["augment", "False", ""],  # only the hyperparameters that differ, or that one run lacks
        ["lr", "0.007", "0.01"],
    ]
    section = run_page.comparison_section(earlier)
    assert "<h2>Compared with the earlier run</h2>" in section and "train-abc" in section
    assert run_page.comparison_section(None) == ""


def test_the_per_class_table_sorts_in_the_page():
    table = html_kit.frame_table(pd.DataFrame({"breed": ["A", "B"], "accuracy": [0.5, 1.0]}), sortable=True)
    page = html_kit.page("report", table)
    assert 'class="dataframe sortable"' in table and "<script>" in page and "table.sortable" in page
    assert "<script>" not in html_kit.page("report", html_kit.frame_table(pd.DataFrame({"a": [1]})))


def test_an_artifact_without_its_model_info_is_one_line_naming_it(tmp_path):
    import tarfile

    from dogbreed.serving import servable

    garbage, bare = tmp_path / "garbage.tar.gz", tmp_path / "bare.tar.gz"
    garbage.write_bytes(b"not an archive")
    with tarfile.open(bare, "w:gz") as archive:
        archive.add(__file__, arcname="model.pth")
    for artifact in (garbage, bare):
        with pytest.raises(
            servable.ArtifactError, match=f"^{artifact} has no readable model_info.json .*package_model"
        ):
            servable.model_info(artifact)
