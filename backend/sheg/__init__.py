"""sheg: speech-driven holistic 3D motion generation (DiffSHEG UniEG engine)."""

from sheg.version import __version__


def load_model(path=None, device="auto", hubert=None, fps_mode=None):
    """Load a model folder (None: the embedded default model) and return a model (`sheg.inference.unieg_model.Model` or
    `sheg.inference.diffgesture_model.DiffGestureModel`)."""
    from sheg.inference.load import load_model as _load

    return _load(path, device=device, hubert=hubert, fps_mode=fps_mode)
