"""The README's main command runs the whole path (model, warm-up, GRPO, held-out evaluation)."""

import subprocess
import sys
from pathlib import Path


def test_quickstart_trains_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "m2rl_trainer.quickstart", "--workdir", str(tmp_path), "--steps", "3"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("[quickstart]")]
    assert any("held-out accuracy before GRPO" in line for line in lines)
    assert any(line.startswith("[quickstart] held-out accuracy: ") and "->" in line for line in lines)
    assert "[m2rl-train] step 3/3" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "step-000003" / "model" / "model.safetensors").exists()
