"""What a failed `pip install` says in one line: its first ERROR line and, for a resolution conflict, the
requirements that conflict (pip prints those under "The conflict is caused by:"). Its last line is often a generic
hint ("ResolutionImpossible: for help visit …") that names no cause."""

from __future__ import annotations


def pip_failure_cause(lines) -> str:
    """The cause of a pip failure from its output lines; '' when pip printed no ERROR line."""
    lines = [line.strip() for line in lines]
    errors = [line[len("ERROR:"):].strip() for line in lines if line.startswith("ERROR:")]
    if not errors:
        return ""
    cause = errors[0].rstrip(".")
    if "The conflict is caused by:" in lines:
        conflict = []
        for line in lines[lines.index("The conflict is caused by:") + 1:]:
            if not line or line.startswith(("To fix this", "ERROR:")):
                break
            conflict.append(line)
        if conflict:
            cause += f" ({'; '.join(conflict)})"
    return cause
