"""Hyperparameter tuning: one spec, two translators.

spec.py          the config's `tuning:` section (a SageMaker tuning job's shape), validated in one place
optuna_study.py  the spec as an Optuna study: the project's own tuner, for the backends without one
trial_jobs.py    each Optuna trial as a training job of the backend, its objective read from the job's lines
sagemaker_tuner.py  the spec as a SageMaker tuning job's request (ranges, limits, warm start, its trials' values)
"""
