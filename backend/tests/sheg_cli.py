"""`sheg` as users run it: a subprocess of this Python (shared by the CLI tests)."""

import subprocess
import sys


def run_cli(*args, timeout: float = 300):
    """Run `python -m sheg ARGS...` (paths allowed), capturing stdout/stderr as text."""
    return subprocess.run([sys.executable, "-m", "sheg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
