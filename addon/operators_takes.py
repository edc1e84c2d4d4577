"""Operators that clean up takes: reduce keys, add a tweak layer, finish tweaking, bake take + tweaks.

Thin wrappers over takes.reduce_take / add_tweak_layer / bake_take on the SHEG panel's target armature; each is one
undo step. The tolerances default to the scene's key settings when the scene has them (scene.sheg.rotation_tolerance
etc., see panel_takes.py), else to the library defaults.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from . import take_layers, takes
from .core.worker_client import one_line

KEYS_ITEMS = [("DENSE", "Dense", "One key per frame (exact, large files)"),
              ("REDUCED", "Reduced", "The fewest Bezier keys within the tolerances (small files, easy to edit)")]
BLEND_ITEMS = [("ADD", "Add", "Keys add to the take channel by channel (quaternions component-wise)"),
               ("COMBINE", "Combine", "Locations and shape keys add, rotations multiply (quaternion offsets)")]


def _armature_problem(context) -> str | None:
    settings = getattr(context.scene, "sheg", None)
    if settings is None or settings.armature is None:
        return "Choose a target armature in the SHEG panel"
    return None


def _poll(cls, context) -> bool:
    problem = _armature_problem(context)
    if problem:
        cls.poll_message_set(problem)
        return False
    return True


def _newest_take(armature) -> str:
    found = takes.list_takes(armature)
    return found[-1]["name"] if found else ""


class _TakeOperator:
    take_name: StringProperty(name="Take", description="Take to work on (empty: the newest take)")

    def _take(self, context) -> str:
        return self.take_name or _newest_take(context.scene.sheg.armature)

    def _fail(self, exc) -> set:
        self.report({"ERROR"}, one_line(str(exc)))
        return {"CANCELLED"}


class _ToleranceOptions:
    rotation_tolerance: FloatProperty(name="Rotation", default=1.0, min=0.001, soft_max=10.0, precision=3,
                                      description="Largest allowed rotation error of a bone, in degrees")
    location_tolerance: FloatProperty(name="Location", default=0.001, min=1e-6, soft_max=0.05, precision=4,
                                      subtype="DISTANCE", unit="LENGTH",
                                      description="Largest allowed error of the pelvis location")
    shape_tolerance: FloatProperty(name="Shape Keys", default=0.01, min=1e-5, soft_max=0.2, precision=4,
                                   description="Largest allowed error of an expression shape-key value")

    def _defaults_from_scene(self, context) -> None:
        """Unset tolerances (and smoothing, where the operator has it) default to the panel's key settings."""
        settings = context.scene.sheg
        for name in ("rotation_tolerance", "location_tolerance", "shape_tolerance", "smoothing"):
            if hasattr(self, name) and not self.properties.is_property_set(name):
                setattr(self, name, getattr(settings, name))

    def _tolerances(self) -> dict:
        return {"rotation_tolerance_deg": self.rotation_tolerance, "location_tolerance": self.location_tolerance,
                "shape_tolerance": self.shape_tolerance}


class SHEG_OT_reduce_take_keys(bpy.types.Operator, _TakeOperator, _ToleranceOptions):
    bl_idname = "sheg.reduce_take_keys"
    bl_label = "Reduce Keys"
    bl_description = ("Rewrite the take with the fewest Bezier keys that stay within the tolerances of its current "
                      "curves at every frame")
    bl_options = {"REGISTER", "UNDO"}

    smoothing: FloatProperty(name="Smoothing", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                             description="Low-pass the take before reducing (0 = off)")

    @classmethod
    def poll(cls, context):
        return _poll(cls, context)

    def invoke(self, context, event):
        self._defaults_from_scene(context)
        return self.execute(context)

    def execute(self, context):
        try:
            info = takes.reduce_take(context, context.scene.sheg.armature, self._take(context),
                                     smoothing=self.smoothing, **self._tolerances())
        except ValueError as exc:
            return self._fail(exc)
        self.report({"INFO"}, f"'{info['action']}': {info['keys_before']} -> {info['keys']} keys, worst "
                              f"{info['max_rotation_error_deg']:.2f} deg / {info['max_shape_error']:.4f}")
        return {"FINISHED"}


class SHEG_OT_add_tweak_layer(bpy.types.Operator, _TakeOperator):
    bl_idname = "sheg.add_tweak_layer"
    bl_label = "Add Tweak Layer"
    bl_description = ("Add an additive NLA layer above the take and edit it (NLA tweak mode): your keys correct the "
                      "take without changing it")
    bl_options = {"REGISTER", "UNDO"}

    blend_type: EnumProperty(name="Blend", items=BLEND_ITEMS, default="ADD")

    @classmethod
    def poll(cls, context):
        return _poll(cls, context)

    def execute(self, context):
        try:
            info = take_layers.add_tweak_layer(context, context.scene.sheg.armature, self._take(context),
                                               blend_type=self.blend_type)
        except ValueError as exc:
            return self._fail(exc)
        self.report({"INFO"}, f"Tweaking '{info['action']}': keys you insert now go to this layer")
        return {"FINISHED"}


def _tweaking_owners(armature) -> list:
    owners = [armature]
    for take in takes.list_takes(armature):
        owners += [owner for owner, _ in takes._owners_of(bpy.data.actions[take["action"]])]
    return [o for o in dict.fromkeys(owners) if o.animation_data is not None and o.animation_data.use_tweak_mode]


class SHEG_OT_finish_tweak(bpy.types.Operator):
    bl_idname = "sheg.finish_tweak"
    bl_label = "Finish Tweaking"
    bl_description = "Leave NLA tweak mode on the armature and its face (the tweak layers keep playing)"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not _poll(cls, context):
            return False
        if not _tweaking_owners(context.scene.sheg.armature):
            cls.poll_message_set("Nothing is being tweaked")
            return False
        return True

    def execute(self, context):
        for owner in _tweaking_owners(context.scene.sheg.armature):
            owner.animation_data.use_tweak_mode = False
        return {"FINISHED"}


class SHEG_OT_bake_take(bpy.types.Operator, _TakeOperator, _ToleranceOptions):
    bl_idname = "sheg.bake_take"
    bl_label = "Bake Take"
    bl_description = ("Merge the take and its tweak layers into one new editable take (the sources are muted, "
                      "not deleted)")
    bl_options = {"REGISTER", "UNDO"}

    keys: EnumProperty(name="Keys", items=KEYS_ITEMS, default="DENSE")

    @classmethod
    def poll(cls, context):
        return _poll(cls, context)

    def invoke(self, context, event):
        self._defaults_from_scene(context)
        settings = context.scene.sheg
        if not self.properties.is_property_set("keys"):
            self.keys = settings.key_density
        return self.execute(context)

    def execute(self, context):
        try:
            info = take_layers.bake_take(context, context.scene.sheg.armature, self._take(context),
                                         keys=self.keys.lower(), **self._tolerances())
        except ValueError as exc:
            return self._fail(exc)
        self.report({"INFO"}, f"Baked '{info['action']}': {info['frames']} frames, {info['keys']} keys")
        return {"FINISHED"}


classes = (SHEG_OT_reduce_take_keys, SHEG_OT_add_tweak_layer, SHEG_OT_finish_tweak, SHEG_OT_bake_take)
