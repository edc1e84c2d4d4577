"""sheg: speech-driven holistic 3D motion generation (DiffSHEG UniEG engine)."""

__version__ = "0.1.0"


def load_model(path=None, device="auto", hubert=None, fps_mode=None):
    """Load a model folder (None: the embedded default model) and return a `sheg.pipeline.Model`."""
    from .pipeline import load_model as _load

    return _load(path, device=device, hubert=hubert, fps_mode=fps_mode)
