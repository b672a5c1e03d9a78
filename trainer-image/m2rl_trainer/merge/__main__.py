"""`python -m m2rl_trainer.merge`: the same program as `m2rl-merge`."""

import sys

from m2rl_trainer.merge.cli import main

sys.exit(main())
