"""`python -m m2rl_trainer.eval`: the same program as `m2rl-eval`."""

import sys

from m2rl_trainer.eval.cli import main

sys.exit(main())
