"""Train a hateful-meme classifier from a recipe.

    accelerate launch recipes/train_peft.py recipes/<model>/<method>/config_<data>.yaml [--key value ...]

Any key of the recipe can be overridden on the command line (e.g. `--data_dir /data/hateful_memes
--learning_rate 3e-5`); an unknown key is an error. The run resumes its own last complete checkpoint in
`output_dir` by itself (`hm_hf_run.json` says whose they are; another run's are refused, `--resume false`
starts over there). The embedded default, on synthetic data on the CPU in about a minute:

    accelerate launch recipes/train_peft.py recipes/synthetic/config_tiny.yaml
"""

import sys

from hm_hf.training.run import cli

if __name__ == "__main__":
    sys.exit(cli())
