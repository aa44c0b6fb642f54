"""The options a run was started with (`--configfile`, `--config`), so that every command the workflow
prints repeats them: a hint without them plans another run (after a demo, the real 1.1 GB download;
after a SageMaker run, the local results folder while the paid endpoint keeps running)."""

import os

ENV = "DOGBREED_RUN_OPTIONS"  # set by the Snakefile in the snakemake process; rule scripts inherit it
FLAGS = ("--configfile", "--configfiles", "--config", "-C")


def from_argv(argv) -> list:
    """The config options of a snakemake command line, with their values (each flag takes the words
    after it until the next option, as Snakemake's own parser does)."""
    options, taking = [], False
    for word in argv[1:]:
        if word in FLAGS:
            options.append(word)
            taking = True
        elif word.startswith(tuple(f"{flag}=" for flag in FLAGS)):
            options.append(word)
            taking = False
        elif taking and not word.startswith("-"):
            options.append(word)
        else:
            taking = False
    return options


def command(what: str) -> str:
    """`snakemake --cores 1 <what>` with this run's config options."""
    options = os.environ.get(ENV, "")
    return f"snakemake --cores 1 {what}" + (f" {options}" if options else "")
