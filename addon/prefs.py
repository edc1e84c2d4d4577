"""Add-on preferences: backend Python (managed venv or a custom interpreter), models, device, SMPL-X file."""

from __future__ import annotations

import json
import os

import bpy
from bpy.props import CollectionProperty, EnumProperty, IntProperty, StringProperty

from . import backend_env
from .core import doctor_report

DEFAULT_MODEL = "Default (embedded)"
# The models inside the bundled backend: panel label -> the name the backend loads (None: its default).
EMBEDDED_MODELS = {DEFAULT_MODEL: None, "DiffGesture small (embedded)": "diffgesture-small"}

DEVICES = [
    ("AUTO", "Auto", "CUDA or Apple MPS when available, else CPU"),
    ("CPU", "CPU", "Always the CPU (works everywhere)"),
    ("CUDA", "CUDA", "An NVIDIA GPU"),
    ("MPS", "MPS", "Apple silicon GPU"),
]


class SHEG_ModelFolder(bpy.types.PropertyGroup):
    path: StringProperty(name="Folder", subtype="DIR_PATH",
                         description="A model folder (with model.json) or a folder of model folders")


class SHEG_UL_model_folders(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        layout.prop(item, "path", text="", emboss=False, icon="FILE_FOLDER")


class ShegPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_mode: EnumProperty(
        name="Backend", default="MANAGED",
        items=[("MANAGED", "Managed", "A Python environment created by the add-on (downloads PyTorch once)"),
               ("CUSTOM", "Custom Python", "Your own Python with the `sheg` package and torch installed")])
    python_path: StringProperty(name="Python", subtype="FILE_PATH",
                                description="Python interpreter that has the sheg backend (`python -m sheg`)")
    device: EnumProperty(name="Device", items=DEVICES, default="AUTO")
    model_folders: CollectionProperty(type=SHEG_ModelFolder)
    model_folder_index: IntProperty()
    smplx_model_path: StringProperty(
        name="SMPL-X Model", subtype="FILE_PATH",
        description="Optional SMPLX_NEUTRAL.npz from smpl-x.is.tue.mpg.de (never shipped: its licence forbids it). "
                    "Create SMPL-X Rig then builds the exact rig from it; the backend Python needs "
                    "`pip install smplx==0.1.28`")
    hubert_path: StringProperty(name="HuBERT", subtype="DIR_PATH",
                                description="Optional local HuBERT-large folder for models that use HuBERT")
    torch_index_url: StringProperty(name="PyTorch Index", description="Optional pip index URL for torch "
                                    "(empty: CPU build, or the CUDA build when the device is CUDA)")
    check_summary: StringProperty(name="Check", default="")

    @classmethod
    def from_context(cls, context=None) -> "ShegPreferences":
        context = context or bpy.context
        return context.preferences.addons[__package__].preferences

    # --- what the rest of the add-on asks ---------------------------------------------------------------------
    def device_name(self) -> str:
        return self.device.lower()

    def backend_python(self) -> str:
        if self.backend_mode == "MANAGED":
            return backend_env.managed_python()
        return bpy.path.abspath(self.python_path) if self.python_path else ""

    def backend_problem(self) -> str | None:
        """Why no generation can start with these settings, or None."""
        python = self.backend_python()
        if self.backend_mode == "MANAGED":
            if not os.path.isfile(python):
                return "Backend not installed: Preferences > Add-ons > SHEG > Install Backend (or Custom Python)"
        elif not self.python_path:
            return "Backend Python not set: Preferences > Add-ons > SHEG > Python"
        elif not os.path.isfile(python):
            return f"Backend Python not found: {python}"
        return None

    def hubert(self) -> str | None:
        return bpy.path.abspath(self.hubert_path) if self.hubert_path else None

    def model_folder_paths(self) -> list[str]:
        """The model folders of the list that exist (a model folder, or a folder holding model folders)."""
        paths = [bpy.path.abspath(entry.path) for entry in self.model_folders if entry.path]
        return [p for p in paths if os.path.isdir(p)]

    def models(self) -> list[tuple[str, str]]:
        """(label, folder) of every model found in the model folders, in list order."""
        found = []
        for root in self.model_folder_paths():
            if os.path.isfile(os.path.join(root, "model.json")):
                candidates = [root]
            else:
                candidates = [os.path.join(root, n) for n in sorted(os.listdir(root))
                              if os.path.isfile(os.path.join(root, n, "model.json"))]
            for folder in candidates:
                found.append((_model_label(folder), os.path.normpath(folder)))
        return found

    # --- UI -------------------------------------------------------------------------------------------------------
    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.use_property_split = True
        col.prop(self, "backend_mode", expand=True)
        if self.backend_mode == "CUSTOM":
            col.prop(self, "python_path")
        else:
            self._draw_managed(col)
        col.prop(self, "device")

        box = layout.box()
        box.label(text="Model folders (each holds model.json, or holds such folders)")
        row = box.row()
        row.template_list("SHEG_UL_model_folders", "", self, "model_folders", self, "model_folder_index", rows=2)
        ops = row.column(align=True)
        ops.operator("sheg.model_folder_add", icon="ADD", text="")
        ops.operator("sheg.model_folder_remove", icon="REMOVE", text="")
        names = list(EMBEDDED_MODELS) + [label for label, _ in self.models()]
        box.label(text="Models: " + ", ".join(names))

        col = layout.column()
        col.use_property_split = True
        col.prop(self, "smplx_model_path")
        col.label(text=("Create SMPL-X Rig: exact rig from this file (backend needs: pip install smplx==0.1.28)"
                        if self.smplx_model_path else "Create SMPL-X Rig: stand-in rig (no SMPL-X model file set)"),
                  icon="INFO")
        col.prop(self, "hubert_path")

        row = layout.row()
        row.operator("sheg.check_backend", icon="CHECKMARK")
        job = backend_env.CHECK
        if job.running:
            row.label(text=job.message + "...")
        elif self.check_summary:
            layout.label(text=self.check_summary)
            if job.report:
                box = layout.box()
                for icon, text in doctor_report.model_lines(job.report):
                    box.label(text=text, icon=icon)

    def _draw_managed(self, col):
        python = backend_env.managed_python()
        job = backend_env.INSTALL
        if job.running:
            row = col.row()
            row.progress(factor=job.fraction, type="BAR", text=job.message)
            row.operator("sheg.cancel_install", text="", icon="CANCEL")
        elif job.error:
            col.label(text=job.error, icon="ERROR")
        row = col.row()
        installed = os.path.isfile(python)
        row.operator("sheg.install_backend", text="Reinstall Backend" if installed else "Install Backend",
                     icon="IMPORT")
        col.label(text=("Installed: " + python) if installed else "Not installed yet", icon="INFO")
        if not bpy.app.online_access:
            col.label(text="Online access is off (Preferences > System > Network): the install needs it",
                      icon="ERROR")
        col.prop(self, "torch_index_url")


Prefs = ShegPreferences  # short name used across the add-on: Prefs.from_context(context)


def _model_label(folder: str) -> str:
    try:
        with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
            name = json.load(f).get("name")
    except (OSError, ValueError):
        name = None
    return f"{name or os.path.basename(os.path.normpath(folder))}"


class SHEG_OT_model_folder_add(bpy.types.Operator):
    bl_idname = "sheg.model_folder_add"
    bl_label = "Add Model Folder"
    bl_description = "Add a folder to search for models"
    bl_options = {"INTERNAL"}

    directory: StringProperty(subtype="DIR_PATH")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        item = prefs.model_folders.add()
        item.path = self.directory
        prefs.model_folder_index = len(prefs.model_folders) - 1
        context.preferences.is_dirty = True
        return {"FINISHED"}


class SHEG_OT_model_folder_remove(bpy.types.Operator):
    bl_idname = "sheg.model_folder_remove"
    bl_label = "Remove Model Folder"
    bl_description = "Remove the selected model folder from the list (the files stay)"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        prefs = ShegPreferences.from_context(context)
        return 0 <= prefs.model_folder_index < len(prefs.model_folders)

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        prefs.model_folders.remove(prefs.model_folder_index)
        prefs.model_folder_index = min(prefs.model_folder_index, len(prefs.model_folders) - 1)
        context.preferences.is_dirty = True
        return {"FINISHED"}


classes = (SHEG_ModelFolder, SHEG_UL_model_folders, ShegPreferences, SHEG_OT_model_folder_add,
           SHEG_OT_model_folder_remove)
