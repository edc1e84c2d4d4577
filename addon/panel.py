"""3D viewport sidebar tab "SHEG": audio, target, model settings, Generate/Cancel with progress, and the takes."""

from __future__ import annotations

import os

import bpy

from . import api, operators, strip_audio, takes
from . import prefs as prefs_module


class SHEG_PT_main(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SHEG"
    bl_label = "Speech to Motion"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        scene = context.scene
        settings = scene.sheg

        col = layout.column()
        col.prop(settings, "audio_source", expand=True)
        if settings.audio_source == "FILE":
            col.prop(settings, "audio_file")
        elif scene.sequence_editor is not None:
            col.prop_search(settings, "strip_name", scene.sequence_editor,
                            strip_audio.all_strips_name(scene.sequence_editor), text="Strip", icon="SOUND")
        else:
            col.label(text="No Sequencer strips yet", icon="INFO")

        col = layout.column()
        col.prop(settings, "armature")
        if settings.armature is None:
            col.operator("sheg.create_rig", icon="ARMATURE_DATA")
            model_file = api.rig_model_file(context)
            col.label(text=f"Exact rig from {os.path.basename(model_file)}" if model_file else
                      "Stand-in rig (set an SMPL-X model file in Preferences for the exact one)", icon="INFO")
        col.prop(settings, "face_mesh")

        col = layout.column()
        row = col.row(align=True)
        row.prop(settings, "model")
        row.operator("sheg.add_model", text="", icon="ADD")
        prefs_module.draw_model_licence(col, context)
        row = col.row(align=True)
        row.prop(settings, "seed")
        row.operator("sheg.new_seed", text="", icon="FILE_REFRESH")
        col.prop(settings, "quality")
        if settings.quality == "CUSTOM":
            col.prop(settings, "steps")
        row = col.row(heading="Guidance")
        row.prop(settings, "use_guidance", text="")
        sub = row.row()
        sub.active = settings.use_guidance
        sub.prop(settings, "guidance", text="")
        row = col.row(heading="Style")
        row.prop(settings, "use_style", text="")
        sub = row.row()
        sub.active = settings.use_style
        sub.prop(settings, "style", text="")
        col.prop(settings, "parts", expand=True)

        job_state = context.window_manager.sheg_job
        layout.use_property_split = False
        if api.active_job() is not None:
            layout.progress(factor=job_state.progress, type="BAR", text=job_state.stage or "Working")
            layout.operator("sheg.cancel", icon="CANCEL")
        else:
            row = layout.row()
            row.scale_y = 1.4
            row.operator("sheg.generate", icon="PLAY_SOUND")
            problem = operators.generate_problem(context)
            if problem:
                layout.label(text=problem, icon="INFO")
            elif job_state.last_message:
                layout.label(text=job_state.last_message)


class SHEG_PT_takes(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SHEG"
    bl_label = "Takes"
    bl_parent_id = "SHEG_PT_main"

    def draw(self, context):
        layout = self.layout
        armature = context.scene.sheg.armature
        row = layout.row(align=True)
        row.operator("sheg.import_take", icon="IMPORT")
        row.operator("sheg.export_take", icon="EXPORT")
        draw_take_boxes(layout, armature, _draw_take)


def _draw_take(box, take) -> None:
    row = box.row(align=True)
    op = row.operator("sheg.solo_take", text="", icon="SOLO_ON" if take["solo"] else "SOLO_OFF", emboss=False)
    op.take_name, op.solo = take["name"], not take["solo"]
    row.label(text=take["name"])
    op = row.operator("sheg.export_take", text="", icon="EXPORT", emboss=False)
    op.take_name = take["name"]
    op = row.operator("sheg.remove_take", text="", icon="X", emboss=False)
    op.take_name = take["name"]
    seed = take.get("seed")
    audio = os.path.basename(take.get("audio_file") or "") or "?"
    box.label(text=f"{take.get('model_id') or '?'} · seed {seed if seed is not None else '?'} · {audio}")


def draw_take_boxes(layout, armature, draw_take) -> None:
    """One box per take of `armature`, newest first, filled by draw_take(box, take); a line when there are none."""
    if armature is None:
        layout.label(text="No target armature")
        return
    found = takes.list_takes(armature)
    if not found:
        layout.label(text="No takes yet")
        return
    for take in reversed(found):
        draw_take(layout.box(), take)


classes = (SHEG_PT_main, SHEG_PT_takes)
