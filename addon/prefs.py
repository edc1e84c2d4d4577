"""Add-on preferences: backend Python (managed venv or a custom interpreter), models, device, SMPL-X file."""

from __future__ import annotations

import json
import os

import bpy
from bpy.props import CollectionProperty, EnumProperty, IntProperty, StringProperty

from . import backend_env
from .core import doctor_report, hubert_setup

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
                                description="Local HuBERT-large folder for models that use HuBERT (Download HuBERT "
                                            "sets it)")
    hubert_endpoint: StringProperty(name="Hub Mirror",
                                    description="Optional Hugging Face mirror for Download HuBERT, e.g. "
                                                "https://hf-mirror.com (empty: $HF_ENDPOINT, else huggingface.co)")
    torch_index_url: StringProperty(name="PyTorch Index", description="Optional pip index URL for torch "
                                    "(empty: CPU build, or the CUDA build when the device is CUDA)")
    check_summary: StringProperty(name="Check", default="")
    accepted_licences: StringProperty(default="", options={"HIDDEN"},
                                      description="Model folders whose non-commercial licence was accepted, one a line")
    add_stats_path: StringProperty(
        name="Statistics", subtype="FILE_PATH",
        description="DiffSHEG's assets/data.tar.gz, or from it talkshow_mean_std.npy (SHOW) or the BEAT stats folder")

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

    def models_need_hubert(self) -> bool:
        """Whether a listed model reads HuBERT features (the managed install then adds the `hubert` extra)."""
        return any(hubert_setup.folder_needs_hubert(folder) for _, folder in self.models())

    def model_folder_paths(self) -> list[str]:
        """The model folders of the list that exist (a model folder, or a folder holding model folders)."""
        paths = [bpy.path.abspath(entry.path) for entry in self.model_folders if entry.path]
        return [p for p in paths if os.path.isdir(p)]

    def licence_problem(self, folder: str | None) -> str | None:
        """Why a model added with Add Model cannot run before its non-commercial licence is accepted, or None."""
        if not folder or not os.path.isfile(os.path.join(folder, "model.json")):
            return None
        if os.path.normpath(os.path.dirname(folder)) != os.path.normpath(backend_env.models_root()):
            return None  # models the user placed in a folder themselves: the user has the licence in hand
        licence = model_licence(folder)
        if "non-commercial" not in licence.lower() or os.path.normpath(folder) in self.accepted_licences.splitlines():
            return None
        return f"Accept the licence of {_model_label(folder)} first ({licence}): press Accept Licence"

    def hubert_problem(self, folder: str | None) -> str | None:
        """Why a model that reads HuBERT features cannot run on the managed backend yet (no `hubert` extra), or
        None."""
        if (self.backend_mode != "MANAGED" or not folder or not hubert_setup.folder_needs_hubert(folder)
                or not backend_env.managed_lacks_hubert_support()):
            return None
        return (f"{_model_label(folder)} reads HuBERT features: press Install HuBERT Support (Preferences > SHEG), "
                "then Download HuBERT")

    def accept_licence(self, folder: str) -> None:
        self.accepted_licences = "\n".join([*self.accepted_licences.splitlines(), os.path.normpath(folder)])

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
        draw_add_model(box, self)
        for label, folder in self.models():
            if model_licence(folder):
                box.label(text=f"{label}: {model_licence(folder)}", icon="INFO")

        col = layout.column()
        col.use_property_split = True
        col.prop(self, "smplx_model_path")
        col.label(text=("Create SMPL-X Rig: exact rig from this file (backend needs: pip install smplx==0.1.28)"
                        if self.smplx_model_path else "Create SMPL-X Rig: stand-in rig (no SMPL-X model file set)"),
                  icon="INFO")
        self._draw_hubert(col)

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
                if self.backend_mode == "MANAGED" and doctor_report.needs_transformers(job.report):
                    box.operator("sheg.install_hubert_support", icon="IMPORT")

    def _draw_hubert(self, col):
        """The HuBERT folder, Download HuBERT (progress bar and cancel while it runs) and the mirror field."""
        col.prop(self, "hubert_path")
        job = backend_env.HUBERT
        if job.running:
            row = col.row()
            row.progress(factor=job.fraction, type="BAR", text=job.message)
            row.operator("sheg.cancel_hubert_download", text="", icon="CANCEL")
        else:
            col.operator("sheg.download_hubert", icon="IMPORT")
            if job.error:
                col.label(text=job.error, icon="ERROR")
            elif job.summary:
                col.label(text=job.summary, icon="CHECKMARK")
        col.prop(self, "hubert_endpoint")
        if (self.backend_mode == "MANAGED" and not backend_env.INSTALL.running and self.models_need_hubert()
                and backend_env.managed_lacks_hubert_support()):
            col.label(text="A listed model reads HuBERT features: the managed backend needs HuBERT support",
                      icon="ERROR")
            col.operator("sheg.install_hubert_support", icon="IMPORT")

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


def _model_meta(folder: str) -> dict:
    try:
        with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _model_label(folder: str) -> str:
    return f"{_model_meta(folder).get('name') or os.path.basename(os.path.normpath(folder))}"


def model_licence(folder: str) -> str:
    """The licence line of a model folder's model.json ('' when it states none)."""
    return str(_model_meta(folder).get("license") or "")


def draw_model_licence(layout, context) -> None:
    """The selected model's licence under the Model field; Accept Licence when it must be accepted first."""
    folder = context.scene.sheg.model_path()
    if folder and os.path.isdir(folder) and model_licence(folder):
        layout.label(text=f"Licence: {model_licence(folder)}", icon="INFO")
    prefs = ShegPreferences.from_context(context)
    if prefs.licence_problem(folder):
        layout.operator("sheg.accept_model_licence", icon="CHECKBOX_HLT")
    install = backend_env.INSTALL
    if install.running:
        row = layout.row()
        row.progress(factor=install.fraction, type="BAR", text=install.message)
        row.operator("sheg.cancel_install", text="", icon="CANCEL")
    elif prefs.hubert_problem(folder):
        layout.operator("sheg.install_hubert_support", icon="IMPORT")
    job = backend_env.IMPORT
    if job.running:
        row = layout.row()
        row.progress(factor=job.fraction, type="BAR", text=job.message)
        row.operator("sheg.cancel_add_model", text="", icon="CANCEL")


def draw_add_model(layout, prefs) -> None:
    """Add Model… with its statistics field, the import's progress with cancel, or its last result."""
    job = backend_env.IMPORT
    if job.running:
        row = layout.row()
        row.progress(factor=job.fraction, type="BAR", text=job.message)
        row.operator("sheg.cancel_add_model", text="", icon="CANCEL")
        return
    layout.prop(prefs, "add_stats_path")
    layout.operator("sheg.add_model", icon="IMPORT")
    if job.error:
        layout.label(text=job.error, icon="ERROR")
    elif job.summary:
        layout.label(text=job.summary, icon="CHECKMARK")


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
