"""Scene settings of a generation (saved with the .blend) and the running job's state (window manager: neither
saved nor undone, so progress updates never enter the undo history)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import prefs as prefs_module
from .core import locks

QUALITY_STEPS = {"FAST": 10, "DEFAULT": 25, "HIGH": 50}


def _is_armature(self, obj) -> bool:
    return obj.type == "ARMATURE"


def _is_mesh_with_keys(self, obj) -> bool:
    return obj.type == "MESH" and obj.data.shape_keys is not None


def _model_search(self, context, edit_text):
    try:
        found = prefs_module.ShegPreferences.from_context(context).models()
    except KeyError:
        found = []
    return list(prefs_module.EMBEDDED_MODELS) + [(folder, label) for label, folder in found]


class SHEG_SceneSettings(bpy.types.PropertyGroup):
    audio_source: EnumProperty(
        name="Audio", default="STRIP",
        items=[("STRIP", "Sound Strip", "A sound strip of the Sequencer: its audible range, at its frames"),
               ("FILE", "File", "An audio file, placed at the current frame")])
    strip_name: StringProperty(
        name="Strip", description="Sound strip to use (empty: the active or only selected sound strip)")
    audio_file: StringProperty(name="File", subtype="FILE_PATH", description="Audio file (wav, flac, ogg, mp3...)")
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                              description="Armature with SMPL-X bone names that receives the gestures")
    face_mesh: PointerProperty(name="Face", type=bpy.types.Object, poll=_is_mesh_with_keys,
                               description="Mesh with expression shape keys (Exp000... or ARKit names)")
    model: StringProperty(name="Model", default=prefs_module.DEFAULT_MODEL, search=_model_search,
                          search_options={"SUGGESTION"},
                          description="Model folder (model.json + model.safetensors), or an embedded model")
    seed: IntProperty(name="Seed", default=0, min=0, description="Same seed and settings give the same take")
    quality: EnumProperty(
        name="Quality", default="DEFAULT",
        items=[("FAST", "Fast", "10 denoising steps"), ("DEFAULT", "Default", "25 denoising steps"),
               ("HIGH", "High", "50 denoising steps"), ("CUSTOM", "Custom", "Choose the number of steps")])
    steps: IntProperty(name="Steps", default=25, min=1, max=1000, description="DDIM denoising steps")
    use_guidance: BoolProperty(name="Guidance", default=False,
                               description="Override the model's classifier-free guidance scale")
    guidance: FloatProperty(name="Guidance", default=1.0, min=0.0, max=10.0, soft_max=5.0,
                            description="Classifier-free guidance scale (1 = off)")
    use_style: BoolProperty(name="Style", default=False, description="Override the model's default speaker style")
    style: IntProperty(name="Style", default=0, min=0, description="Speaker/style index of the model")
    parts: EnumProperty(
        name="Parts", default="BOTH",
        items=[("GESTURE", "Gesture", "Body and hands only"), ("EXPRESSION", "Expression", "Face and jaw only"),
               ("BOTH", "Both", "Body, hands, jaw and face")])

    # how takes are keyed (Generate and Import): see takes.KEY_OPTIONS
    key_density: EnumProperty(
        name="Keys", default="DENSE",
        items=[("DENSE", "Every Frame", "A key on every frame"),
               ("REDUCED", "Reduced", "The fewest Bezier keys that stay within the tolerances at every frame")])
    rotation_tolerance: FloatProperty(name="Rotation", default=1.0, min=0.001, soft_max=10.0, precision=3,
                                      description="Largest rotation error of a reduced take, in degrees")
    location_tolerance: FloatProperty(name="Location", default=0.001, min=0.00001, soft_max=0.05, precision=4,
                                      subtype="DISTANCE", description="Largest pelvis location error of a reduced take")
    shape_tolerance: FloatProperty(name="Shape Keys", default=0.01, min=0.0001, soft_max=0.2, precision=4,
                                   description="Largest shape-key value error of a reduced take")
    smoothing: FloatProperty(name="Smoothing", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                             description="Zero-phase low-pass before writing keys (0 = off)")

    # what Regenerate keeps of a take (core.locks)
    lock_frames: BoolProperty(name="Lock Frames", default=True,
                              description="Keep the take exactly on a frame range; regenerate the rest around it")
    lock_frame_start: IntProperty(name="From", default=1, description="First locked frame (scene frame)")
    lock_frame_end: IntProperty(name="To", default=1, description="Last locked frame (scene frame, included)")
    lock_parts: EnumProperty(
        name="Lock Parts", options={"ENUM_FLAG"},
        items=[(name.upper(), label, f"Keep the take's {label.lower()} exactly") for name, label in
               locks.LOCK_PARTS.items()],
        description="Body parts kept exactly (none: all parts on the locked frames)")

    def lock(self) -> dict:
        """api.regenerate_take's lock_frames / lock_parts these settings stand for."""
        parts = [name.lower() for name in sorted(self.lock_parts)]
        return {"lock_frames": (self.lock_frame_start, self.lock_frame_end) if self.lock_frames else None,
                "lock_parts": parts or None}

    def key_options(self) -> dict:
        """The keyword options of takes.apply_take / import_take these settings stand for."""
        return {"keys": self.key_density.lower(), "rotation_tolerance_deg": self.rotation_tolerance,
                "location_tolerance": self.location_tolerance, "shape_tolerance": self.shape_tolerance,
                "smoothing": self.smoothing}

    def step_count(self) -> int:
        return self.steps if self.quality == "CUSTOM" else QUALITY_STEPS[self.quality]

    def model_path(self) -> str | None:
        """The model folder to load, an embedded model's backend name, or None for the embedded default."""
        text = self.model.strip()
        if not text:
            return None
        if text in prefs_module.EMBEDDED_MODELS:
            return prefs_module.EMBEDDED_MODELS[text]
        return bpy.path.abspath(text)


class SHEG_JobState(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(name="Stage", default="")
    last_message: StringProperty(default="")  # the last result or error, one line
    max_tick_ms: FloatProperty(default=0.0, description="Longest modal timer tick of the last run (ms)")
    apply_ms: FloatProperty(default=0.0, description="Time to write the last take into the scene (ms)")


classes = (SHEG_SceneSettings, SHEG_JobState)


def register() -> None:
    bpy.types.Scene.sheg = PointerProperty(type=SHEG_SceneSettings)
    bpy.types.WindowManager.sheg_job = PointerProperty(type=SHEG_JobState)


def unregister() -> None:
    del bpy.types.WindowManager.sheg_job
    del bpy.types.Scene.sheg
