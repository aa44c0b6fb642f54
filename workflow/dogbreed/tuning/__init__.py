"""Hyperparameter tuning: one spec, two translators.

spec.py          the config's `tuning:` section (SageMaker's HyperparameterTuner shape), validated in one place
optuna_study.py  the spec as an Optuna study: the project's own tuner, for the backends without one
trial_jobs.py    each Optuna trial as a training job of the backend, its objective read from the job's lines
sagemaker_tuner.py  the spec as SageMaker's HyperparameterTuner (ranges, limits, warm start, its trials' values)
"""
