"""The cause line of a failed pip install (addon/core/pip_output.py), on pip 23-26 output captured here."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core.pip_output import pip_failure_cause  # noqa: E402

CONFLICT = """Looking in indexes: file:///tmp/emptyidx
WARNING: Location 'file:///tmp/emptyidx/torch/' is ignored: it is neither a file nor a directory.
ERROR: Cannot install torch==0.0.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested torch==0.0.0
    The user requested (constraint) torch<=2.14.1

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""

NOT_FOUND = """Looking in indexes: file:///tmp/emptyidx
ERROR: Could not find a version that satisfies the requirement torch==0.0.0 (from versions: 2.13.0+cpu)
ERROR: No matching distribution found for torch==0.0.0
"""


def test_a_conflict_names_the_requirements_that_conflict():
    assert pip_failure_cause(CONFLICT.splitlines(True)) == (
        "Cannot install torch==0.0.0 because these package versions have conflicting dependencies "
        "(The user requested torch==0.0.0; The user requested (constraint) torch<=2.14.1)")


def test_the_first_error_line_is_the_cause():
    assert pip_failure_cause(NOT_FOUND.splitlines(True)) == (
        "Could not find a version that satisfies the requirement torch==0.0.0 (from versions: 2.13.0+cpu)")


def test_no_error_line_gives_nothing():
    assert pip_failure_cause(["Collecting torch\n", "Killed\n"]) == ""
