"""A results folder says which run finished there, so that another run's first line warns before it replaces it."""

from dogbreed.runtime import finished_run

DEMO = {"data_source": "demo", "backend": "local"}


def test_a_run_of_other_data_or_backend_says_it_replaces_the_finished_one(tmp_path):
    assert finished_run.replacing(tmp_path, DEMO, jobs_to_run=12) is None  # nothing finished there yet
    finished_run.remember(tmp_path, DEMO)
    assert finished_run.replacing(tmp_path, DEMO, jobs_to_run=12) is None  # the same run again: a plain rerun
    real = {"data_source": "https://example.org/dogImages.zip", "backend": "local"}
    line = finished_run.replacing(tmp_path, real, jobs_to_run=12)
    assert line.startswith(f"note: {tmp_path}/ holds a finished run of demo on local; this run (") and "12" in line
    assert finished_run.replacing(tmp_path, {**DEMO, "backend": "sagemaker"}, jobs_to_run=3) is not None
    assert finished_run.replacing(tmp_path, real, jobs_to_run=0) is None  # nothing to redo: nothing replaced
