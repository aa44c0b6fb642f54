"""The workflow's orchestration code: what the Snakemake rules call. Never shipped to SageMaker."""
