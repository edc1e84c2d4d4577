"""SHEG sidebar sub-panel "Take Cleanup": key density for new takes, and per take: reduce keys, add a tweak layer,
bake take + tweaks. The key-density settings are the scene's (props.py: key_density, rotation_tolerance,
location_tolerance, shape_tolerance, smoothing)."""

from __future__ import annotations

import bpy

from . import operators_takes
from .panel import draw_take_boxes

class SHEG_PT_take_cleanup(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SHEG"
    bl_label = "Take Cleanup"
    bl_parent_id = "SHEG_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.sheg
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.label(text="New takes")
        col.prop(settings, "key_density", expand=True)
        sub = col.column(align=True)
        sub.active = settings.key_density == "REDUCED"
        sub.prop(settings, "rotation_tolerance")
        sub.prop(settings, "location_tolerance")
        sub.prop(settings, "shape_tolerance")
        col.prop(settings, "smoothing", slider=True)

        armature = settings.armature
        if armature is not None and operators_takes._tweaking_owners(armature):
            box = layout.box()
            box.label(text="Tweaking: new keys go to the tweak layer", icon="NLA")
            box.operator("sheg.finish_tweak", icon="CHECKMARK")
        box = layout.box()
        box.label(text="Regenerate keeps", icon="LOCKED")
        row = box.row(align=True)
        row.prop(settings, "lock_frames", text="")
        sub = row.row(align=True)
        sub.active = settings.lock_frames
        sub.prop(settings, "lock_frame_start")
        sub.prop(settings, "lock_frame_end")
        box.prop(settings, "lock_parts")
        draw_take_boxes(layout, armature, _draw_take)


def _draw_take(box, take) -> None:
    row = box.row(align=True)
    row.label(text=take["name"], icon="HIDE_ON" if take["mute"] else "ACTION")
    for idname, icon in (("sheg.reduce_take_keys", "IPO_BEZIER"), ("sheg.add_tweak_layer", "NLA_PUSHDOWN"),
                         ("sheg.bake_take", "KEYFRAME_HLT"), ("sheg.regenerate_take", "FILE_REFRESH")):
        op = row.operator(idname, text="", icon=icon)
        op.take_name = take["name"]
    detail = f"{take['keys']} keys"
    if take["tweak_layers"]:
        detail += f" · {take['tweak_layers']} tweak layer{'s' if take['tweak_layers'] > 1 else ''}"
    if take["baked_from"]:
        detail += f" · baked from {take['baked_from']}"
    box.label(text=detail)


classes = (SHEG_PT_take_cleanup,)
