import pandas as pd
from dogbreed.runtime.rule_runner import run_rule
from PIL import Image


def main(smk):
    # the first test image in the manifest's order: the same one on every rerun of the same data
    test = pd.read_csv(smk.input.manifest).query("split == 'test'")
    if test.empty:
        raise ValueError(f"{smk.input.manifest} lists no test image")  # prepare refuses this before
    first = test.iloc[0]
    # a JPEG whatever the source's format, as its name and the examples' Content-Type say
    with Image.open(f"{smk.input.channels}/{first.path}") as image:
        image.convert("RGB").save(smk.output[0], "JPEG", quality=95)
    return f"{smk.output[0]}: a test image of {first.breed} ({first.path})"


run_rule(main, snakemake)
