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


class TwoConfigfileFlags(ValueError):
    """Snakemake keeps only the last of several --configfile flags, silently: the first overlay would be lost."""


def check_one_configfile_flag(argv):
    """Refuse a second --configfile flag: Snakemake's parser keeps the last one only, so
    `--configfile config/demo.yaml --configfile mine.yaml` would plan the real run (the 1.1 GB download)."""
    flags, files, taking = 0, [], False
    for word in argv[1:]:
        flag, _, value = word.partition("=")
        if flag in ("--configfile", "--configfiles"):
            flags += 1
            files += [value] if value else []
            taking = not value
        elif taking and not word.startswith("-"):
            files.append(word)
        else:
            taking = False
    if flags > 1:
        raise TwoConfigfileFlags(
            f"--configfile is given {flags} times, and Snakemake would keep only the last one's files: give "
            f"them all to one flag, later files winning: --configfile {' '.join(files)}"
        )


def command(what: str) -> str:
    """`snakemake <what>` with this run's config options (the workflow profile gives --cores)."""
    options = os.environ.get(ENV, "")
    return f"snakemake {what}" + (f" {options}" if options else "")
