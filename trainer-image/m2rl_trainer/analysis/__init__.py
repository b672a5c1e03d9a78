"""The M2RL study's mechanism analyses of an evaluated suite (the weight-space one is m2rl-merge's).

- information.py: KL cross-matrix and policy-neighbourhood test on trajectories sampled per domain
- prediction.py: per-prompt gains over the SFT model and their cosine with the experts' union gain
- selfverify.py: each model as a generative judge of given responses (outcome-only and full reasoning)
- runner.py: reads the evaluation's outputs, generates and scores, writes OUTPUT/_analysis/
- cli.py: `python -m m2rl_trainer.analysis`, the EvalSuite pod's program when spec.analysis is set
Nothing is imported here, so `--help` and a bad config answer without loading torch.
"""
