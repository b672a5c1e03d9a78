"""Command lines of the trainer image."""

import sys


def train_main(argv: list[str] | None = None) -> int:
    raise SystemExit("m2rl-train: not implemented yet")


def tiny_model_main(argv: list[str] | None = None) -> int:
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
