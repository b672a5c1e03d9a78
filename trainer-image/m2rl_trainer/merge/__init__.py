"""Merges of expert checkpoints (mergekit) and the weight-space analysis of their task vectors.

`m2rl-merge` (cli.py) is the program a MergeJob's pod runs: config.py checks the mergekit config,
runner.py merges into a temporary folder and renames it into place, analysis.py streams the task
vectors (expert - base) tensor by tensor, heatmap.py draws their cosine similarities as an SVG.
Nothing is imported here, so `m2rl-merge --help` and a bad config answer without loading torch.
"""
