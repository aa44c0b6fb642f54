"""The run report's evaluation at dogImages' scale: 133 classes, generated predictions (no training)."""

import numpy as np
from dogbreed.reporting import run_page
from PIL import Image

BREEDS = [f"Breed_{i:03d}" for i in range(1, 134)]


def evaluation_of_133_classes(seed=0) -> dict:
    """metrics.json as evaluate writes it, for 133 classes of 3–9 test images, a few classes often mixed up."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, 10, size=len(BREEDS))
    matrix = np.zeros((len(BREEDS), len(BREEDS)), dtype=int)
    for i, n in enumerate(counts):
        for _ in range(n):
            # every tenth class is confused with its neighbour half the time; the rest are mostly right
            wrong = rng.random() < (0.5 if i % 10 == 0 else 0.1)
            matrix[i, (i + 1) % len(BREEDS) if wrong else i] += 1
    per_class = {
        name: {"index": i, "n": int(counts[i]), "accuracy": matrix[i, i] / counts[i]} for i, name in enumerate(BREEDS)
    }
    return {
        "accuracy": np.trace(matrix) / matrix.sum(),
        "per_class_accuracy": per_class,
        "confusion_matrix": {"classes": BREEDS, "matrix": matrix.tolist()},
    }


def test_the_confusion_view_names_the_most_confused_of_133_classes(tmp_path):
    evaluation = evaluation_of_133_classes()
    confused = run_page.most_confused_classes(evaluation)
    assert len(confused) == run_page.NAMED_CLASSES
    mixed_up = {name for i, name in enumerate(BREEDS) if i % 10 == 0}  # and their neighbours
    assert mixed_up & set(confused[:10]) and set(confused) <= set(BREEDS)
    run_page.plot_confusion(evaluation, tmp_path / "confusion.png")
    run_page.plot_per_class(evaluation, tmp_path / "per_class.png")
    for figure in ("confusion.png", "per_class.png"):
        width, height = Image.open(tmp_path / figure).size
        assert width > 600 and height > 300


def test_every_class_is_in_the_per_class_table_worst_first_with_its_counts():
    evaluation = evaluation_of_133_classes()
    table = run_page.per_class_table(evaluation)
    assert sorted(table["breed"]) == BREEDS and list(table["accuracy"]) == sorted(table["accuracy"])
    worst = table.iloc[0]
    assert worst["test images"] == evaluation["per_class_accuracy"][worst["breed"]]["n"]
    assert worst["most often taken for"].startswith(BREEDS[(BREEDS.index(worst["breed"]) + 1) % len(BREEDS)])
