"""SHEG sidebar sub-panel "Retarget": put a take on the character's own armature (retarget.py).

Scene settings `scene.sheg_retarget`: the target armature, an optional face mesh, the root policy and the bone map
shown for correction (one row per SMPL-X joint; an empty bone leaves the joint out). Operators: Find Bone Map (fill
the rows from the map kept on the target or the presets), Save / Load Bone Map (JSON presets), Retarget Take (one
undo step). The source is the SHEG panel's SMPL-X armature and one of its takes.
"""

from __future__ import annotations

import bpy
from bpy.props import CollectionProperty, EnumProperty, PointerProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import retarget, takes
from .core import smplx
from .core.worker_client import one_line

ROOT_ITEMS = [("in_place", "In Place", "Rotations only: the character turns and bends where it stands"),
              ("translation", "Translation", "The pelvis bone also follows the take's translation, scaled to the "
                                             "character's pelvis height")]


def _is_armature(self, obj) -> bool:
    return obj.type == "ARMATURE"


def _is_mesh_with_keys(self, obj) -> bool:
    return obj.type == "MESH" and obj.data.shape_keys is not None


class SHEG_RetargetBone(bpy.types.PropertyGroup):
    joint: StringProperty(name="Joint")
    bone: StringProperty(name="Bone", description="Target bone that follows this SMPL-X joint (empty: none)")


class SHEG_RetargetSettings(bpy.types.PropertyGroup):
    target: PointerProperty(name="Target", type=bpy.types.Object, poll=_is_armature,
                            description="The character's armature (Rigify, Mixamo, Auto-Rig Pro, CC, MetaHuman...)")
    face_mesh: PointerProperty(name="Face", type=bpy.types.Object, poll=_is_mesh_with_keys,
                               description="The character's face mesh with Exp### or ARKit-named shape keys")
    root: EnumProperty(name="Root", items=ROOT_ITEMS, default="in_place")
    bones: CollectionProperty(type=SHEG_RetargetBone)
    map_target: StringProperty(description="The armature the rows were filled for")
    preset: StringProperty(description="The preset the rows came from")

    def bone_map(self) -> dict | None:
        """The rows as {joint: bone} when they were filled for the current target, else None."""
        if self.target is None or self.map_target != self.target.name or not len(self.bones):
            return None
        return {row.joint: row.bone for row in self.bones if row.bone}

    def fill(self, target, preset: str, bone_map: dict) -> None:
        self.bones.clear()
        for joint in smplx.JOINT_NAMES:
            row = self.bones.add()
            row.joint, row.bone = joint, bone_map.get(joint, "")
        self.map_target, self.preset = target.name, preset


def _settings(context):
    return context.scene.sheg_retarget


def _problem(context, need_take: bool = True) -> str | None:
    if _settings(context).target is None:
        return "Choose the character's armature under Retarget > Target"
    if need_take:
        source = context.scene.sheg.armature
        if source is None or not takes.list_takes(source):
            return "The SHEG panel's armature has no take to retarget"
    return None


class _RetargetOperator:
    need_take = False

    @classmethod
    def poll(cls, context):
        problem = _problem(context, cls.need_take)
        if problem:
            cls.poll_message_set(problem)
            return False
        return True

    def _fail(self, exc) -> set:
        self.report({"ERROR"}, one_line(str(exc)))
        return {"CANCELLED"}


class SHEG_OT_find_bone_map(bpy.types.Operator, _RetargetOperator):
    bl_idname = "sheg.find_bone_map"
    bl_label = "Find Bone Map"
    bl_description = "Fill the bone map from the target's saved map or by bone names (Rigify, Mixamo, CC, ...)"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = _settings(context)
        try:
            preset, bone_map = retarget.find_bone_map(settings.target)
        except ValueError as exc:
            return self._fail(exc)
        settings.fill(settings.target, preset, bone_map)
        self.report({"INFO"}, f"{len(bone_map)} joints mapped ({preset or 'no preset matched'})")
        return {"FINISHED"}


class SHEG_OT_save_bone_map(bpy.types.Operator, ExportHelper, _RetargetOperator):
    bl_idname = "sheg.save_bone_map"
    bl_label = "Save Bone Map"
    bl_description = "Write the bone map as a JSON preset"

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        settings = _settings(context)
        try:
            rows = settings.bone_map()
            if rows is not None:
                retarget.store_bone_map(settings.target, rows, settings.preset)
            info = retarget.save_bone_map(settings.target, self.filepath)
        except ValueError as exc:
            return self._fail(exc)
        self.report({"INFO"}, f"Saved {info['joints']} joints to {self.filepath}")
        return {"FINISHED"}


class SHEG_OT_load_bone_map(bpy.types.Operator, ImportHelper, _RetargetOperator):
    bl_idname = "sheg.load_bone_map"
    bl_label = "Load Bone Map"
    bl_description = "Read a JSON bone map preset for the target armature"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        settings = _settings(context)
        try:
            info = retarget.load_bone_map(settings.target, self.filepath)
        except ValueError as exc:
            return self._fail(exc)
        preset, bone_map = retarget.find_bone_map(settings.target)
        settings.fill(settings.target, preset, bone_map)
        self.report({"INFO"}, f"Loaded {info['joints']} joints from {self.filepath}")
        return {"FINISHED"}


class SHEG_OT_retarget_take(bpy.types.Operator, _RetargetOperator):
    bl_idname = "sheg.retarget_take"
    bl_label = "Retarget Take"
    bl_description = ("Write the take onto the target armature as a new take (new action on its own NLA track, "
                      "earlier actions kept)")
    bl_options = {"REGISTER", "UNDO"}
    need_take = True

    take_name: StringProperty(name="Take", description="Take of the SHEG armature (empty: the newest)")

    def execute(self, context):
        settings = _settings(context)
        source = context.scene.sheg.armature
        take_name = self.take_name or takes.list_takes(source)[-1]["name"]
        try:
            info = retarget.retarget_take(context, source, take_name, settings.target, bone_map=settings.bone_map(),
                                          root=settings.root, face_mesh=settings.face_mesh,
                                          **context.scene.sheg.key_options())
            retarget.store_bone_map(settings.target, info["bone_map"], info["preset"])
        except ValueError as exc:
            return self._fail(exc)
        settings.fill(settings.target, info["preset"], info["bone_map"])
        self.report({"INFO"}, f"Retargeted '{take_name}' onto '{settings.target.name}': {info['joints']} bones; "
                              f"{info['unmapped_line']}")
        return {"FINISHED"}


class SHEG_PT_retarget(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SHEG"
    bl_label = "Retarget"
    bl_parent_id = "SHEG_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(settings, "target")
        col.prop(settings, "face_mesh")
        col.prop(settings, "root", expand=True)
        row = layout.row(align=True)
        row.operator("sheg.find_bone_map", icon="VIEWZOOM")
        row.operator("sheg.load_bone_map", text="", icon="FILEBROWSER")
        row.operator("sheg.save_bone_map", text="", icon="FILE_TICK")
        layout.operator("sheg.retarget_take", icon="ARMATURE_DATA")
        target = settings.target
        if target is None or settings.map_target != target.name:
            return
        box = layout.box()
        mapped = sum(1 for row in settings.bones if row.bone)
        box.label(text=f"Bone map: {mapped} of {len(settings.bones)} joints ({settings.preset or 'custom'})")
        grid = box.column(align=True)
        for row in settings.bones:
            line = grid.row(align=True)
            line.label(text=row.joint)
            line.prop_search(row, "bone", target.data, "bones", text="")


classes = (SHEG_RetargetBone, SHEG_RetargetSettings, SHEG_OT_find_bone_map, SHEG_OT_save_bone_map,
           SHEG_OT_load_bone_map, SHEG_OT_retarget_take, SHEG_PT_retarget)


def register() -> None:
    bpy.types.Scene.sheg_retarget = PointerProperty(type=SHEG_RetargetSettings)


def unregister() -> None:
    del bpy.types.Scene.sheg_retarget
