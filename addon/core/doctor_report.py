"""The backend's `sheg doctor --json` report as short lines for the preferences (imports no bpy)."""

from __future__ import annotations


def summary_part(report: dict) -> str:
    """'models: 2 of 3 usable' for the one-line check summary."""
    models = report.get("models", [])
    return f"models: {sum(bool(m.get('usable')) for m in models)} of {len(models)} usable"


def model_lines(report: dict) -> list[tuple[str, str]]:
    """(icon, text) per line: each model with its state and licence, then what it needs and the fix."""
    lines = []
    for model in report.get("models", []):
        usable = bool(model.get("usable"))
        fps = f", {model['fps']:g} fps" if model.get("fps") else ""
        layout = f" ({model['layout']}{fps})" if model.get("layout") else ""
        lines.append(("CHECKMARK" if usable else "ERROR", f"{model.get('name', '?')}{layout}"))
        if model.get("license"):
            lines.append(("BLANK1", f"licence: {model['license']}"))
        for need in model.get("needs", []):
            lines.append(("BLANK1", f"{need['what']}: {need['problem']}"))
            lines.append(("BLANK1", f"fix: {need['fix']}"))
    for name, pkg in report.get("packages", {}).items():
        if not pkg.get("installed"):
            lines.append(("INFO", f"{name} not installed (for {pkg['for']}): {pkg['fix']}"))
    return lines


def needs_transformers(report: dict) -> bool:
    """Whether a model of the report cannot run for lack of the `transformers` package (the `hubert` extra)."""
    return any(need.get("what") == "transformers" for model in report.get("models", [])
               for need in model.get("needs", []))
