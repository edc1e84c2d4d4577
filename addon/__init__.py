"""SHEG: speech to SMPL-X body gestures and facial expression (DiffSHEG UniEG) for Blender.

The model runs in a separate backend Python (see backend_env.py); this package never imports torch.
"""

import bpy

from . import operators, operators_takes, panel, panel_takes, prefs, props, retarget_ui
from .core import worker_client

# panel_takes after panel: its sub-panel's parent is SHEG_PT_main
classes = (*prefs.classes, *props.classes, *operators.classes, *operators_takes.classes, *panel.classes,
           *panel_takes.classes, *retarget_ui.classes)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    props.register()
    retarget_ui.register()


def unregister():
    worker_client.shutdown_session()  # the worker holds the model in memory: it goes with the add-on
    retarget_ui.unregister()
    props.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

