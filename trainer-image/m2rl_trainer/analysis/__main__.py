import sys

from m2rl_trainer.analysis.cli import main

sys.exit(main())
