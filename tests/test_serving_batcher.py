"""The local endpoint's batching (dogbreed/serving/server.py Batcher), in process: concurrent requests share a
forward pass, each gets its own rows, a bad or odd-shaped request never holds up or spoils the others."""

import threading

import pytest
import torch
from dogbreed.serving.server import Batcher


class CountingModel:
    """predict_fn that records the batches it sees; row i's answer is its input's first value."""

    def __init__(self, fail_on=None):
        self.batches, self.fail_on = [], fail_on

    def predict_fn(self, inputs, model):
        self.batches.append(len(inputs))
        if self.fail_on is not None and (inputs[:, 0, 0, 0] == self.fail_on).any():
            raise RuntimeError("the forward pass failed")
        return {"probabilities": inputs[:, 0, 0, 0].clone(), "classes": ["a", "b"]}


def request(batcher, value, shape=(1, 3, 4, 4), results=None, arrived=False):
    if not arrived:
        batcher.arriving()
    try:
        answer = batcher.decoded(torch.full(shape, float(value)))
    except RuntimeError as error:
        answer = error
    if results is not None:
        results[value] = answer
    return answer


def run_concurrently(batcher, values, shapes=None):
    """Requests that all came in before any is decoded (so the batcher waits for every one of them)."""
    results = {}
    for _ in values:
        batcher.arriving()
    threads = [
        threading.Thread(target=request, args=(batcher, v, (shapes or {}).get(v, (1, 3, 4, 4)), results, True))
        for v in values
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_requests_share_a_forward_pass_and_each_gets_its_own_rows():
    model = CountingModel()
    batcher = Batcher(model.predict_fn, None, max_size=8, max_delay_s=3600)
    results = run_concurrently(batcher, range(8))
    assert model.batches == [8]
    for value, answer in results.items():
        assert answer["probabilities"].tolist() == [float(value)] and answer["classes"] == ["a", "b"]


def test_a_lone_request_does_not_wait_for_the_delay():
    model = CountingModel()
    batcher = Batcher(model.predict_fn, None, max_size=16, max_delay_s=3600)  # an hour: waiting would hang the test
    done = threading.Event()
    threading.Thread(target=lambda: (request(batcher, 5), done.set()), daemon=True).start()
    assert done.wait(60) and model.batches == [1]


def test_a_failed_decode_frees_the_batch_and_a_failed_batch_answers_each_of_its_requests():
    model = CountingModel(fail_on=3.0)
    batcher = Batcher(model.predict_fn, None, max_size=4, max_delay_s=3600)
    batcher.arriving()
    assert batcher.decoded(None) is None  # a request whose input_fn failed: nobody waits for it
    assert request(batcher, 1)["probabilities"].tolist() == [1.0]
    assert isinstance(request(batcher, 3), RuntimeError)  # the error reaches the request, the server goes on
    assert request(batcher, 2)["probabilities"].tolist() == [2.0]


def test_inputs_of_another_shape_or_over_the_batch_size_go_in_batches_of_their_own():
    model = CountingModel()
    batcher = Batcher(model.predict_fn, None, max_size=4, max_delay_s=3600)
    shapes = {0: (1, 3, 4, 4), 1: (1, 3, 8, 8), 2: (6, 3, 4, 4), 3: (1, 3, 4, 4)}
    results = run_concurrently(batcher, range(4), shapes)
    assert sorted(model.batches) == [1, 2, 6]
    assert results[2]["probabilities"].tolist() == [2.0] * 6 and results[1]["probabilities"].tolist() == [1.0]


@pytest.mark.parametrize("size", [1, 16])
def test_rows_are_cut_from_every_batch_sized_tensor(size):
    from dogbreed.serving.server import _rows

    prediction = {"probabilities": torch.arange(size * 2).view(size, 2), "classes": ["a", "b"]}
    assert _rows(prediction, 0, 1)["probabilities"].tolist() == [[0, 1]] and _rows(prediction, 0, 1)["classes"] == [
        "a",
        "b",
    ]
