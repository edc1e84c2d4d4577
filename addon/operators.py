"""Operators: thin wrappers that validate (poll says why a button is disabled) and delegate to api/takes/rig.

Generate runs modally in the UI (a 0.1 s timer polls the worker without blocking; Esc or Cancel stops it within a
second and leaves the scene unchanged) and blocks in execute() in background mode, where modal operators and timers
never run. The take is written inside the operator, so one undo step removes it.
"""

from __future__ import annotations

import os
import random
import time

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import api, backend_env, strip_audio, takes
from .core import hubert_setup
from .core.worker_client import DONE, RUNNING, WorkerError, one_line
from .prefs import ShegPreferences

TIMER_SECONDS = 0.1


def _redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


def _poll_with_reason(cls, reason: str | None) -> bool:
    if reason:
        cls.poll_message_set(reason)
        return False
    return True


def generate_problem(context) -> str | None:
    """Why Generate is disabled with the panel's settings, or None."""
    if api.active_job() is not None:
        return "A generation is running: wait for it or press Cancel"
    scene = context.scene
    settings = scene.sheg
    if settings.audio_source == "FILE":
        problem = api.audio_problem(scene, audio_path=settings.audio_file or None) if settings.audio_file else \
            "Choose an audio file"
    else:
        problem = api.audio_problem(scene, strip_audio.find_sound_strip(scene, settings.strip_name))
    return (problem or api.target_problem(settings.armature, settings.face_mesh, settings.parts)
            or api.backend_problem(context)
            or ShegPreferences.from_context(context).licence_problem(settings.model_path())
            or ShegPreferences.from_context(context).hubert_problem(settings.model_path()))


class _GenerationOperator:
    """Run a generation job: blocking in background mode, modal with a timer otherwise. Subclasses give _job.
    A mixin, not an Operator: Blender loses a registered operator's Python class when another one subclasses it."""

    def _report_done(self, context, info: dict) -> None:
        message = (f"Take '{info['name']}': {info['frames']} frames from frame {info['start_frame']}, "
                   f"{info['joints']} joints, {info['expressions']} expressions")
        context.window_manager.sheg_job.last_message = message
        self.report({"INFO"}, message)

    def _fail(self, context, message: str) -> set:
        message = one_line(message) or "generation failed"
        context.window_manager.sheg_job.last_message = message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def execute(self, context):
        """Blocking: background mode and scripts."""
        state = context.window_manager.sheg_job
        state.running, state.progress, state.stage = True, 0.0, "Starting"
        try:
            info = self._job(context).run_blocking(context)
        except (ValueError, WorkerError) as exc:
            return self._fail(context, str(exc))
        finally:
            state.running = False
        state.progress, state.stage = 1.0, "Done"
        self._report_done(context, info)
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        job = self._job(context)
        try:
            job.start(context)
        except (ValueError, WorkerError) as exc:
            return self._fail(context, str(exc))
        self.job = job
        api.set_active_job(job)
        state = context.window_manager.sheg_job
        state.running, state.progress, state.stage = True, 0.0, job.stage
        state.max_tick_ms = state.apply_ms = 0.0
        self.max_tick = 0.0
        wm = context.window_manager
        self.timer = wm.event_timer_add(TIMER_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        _redraw(context)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self.job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        started = time.perf_counter()
        status = self.job.tick()
        state = context.window_manager.sheg_job
        state.progress, state.stage = self.job.fraction, self.job.stage
        _redraw(context)
        if status == RUNNING:
            self.max_tick = max(self.max_tick, time.perf_counter() - started)
            state.max_tick_ms = 1000.0 * self.max_tick
            return {"PASS_THROUGH"}  # other handlers' timers (playback...) must still get their events
        try:
            if status != DONE:
                if self.job.error:
                    return self._fail(context, self.job.error)
                state.last_message = "Generation cancelled"
                self.report({"WARNING"}, "Generation cancelled: the scene is unchanged")
                return {"CANCELLED"}
            applying = time.perf_counter()
            try:
                info = self.job.finish(context)
            except (ValueError, WorkerError) as exc:
                return self._fail(context, str(exc))
            state.apply_ms = 1000.0 * (time.perf_counter() - applying)
            print(f"SHEG: take '{info['name']}' {info['frames']} frames; worker {info.get('worker_seconds')} s; "
                  f"max tick {state.max_tick_ms:.1f} ms; apply {state.apply_ms:.0f} ms")
            self._report_done(context, info)
            return {"FINISHED"}
        finally:
            self._cleanup(context)

    def cancel(self, context):
        """Blender ends the modal (file load, quit): stop the worker's job too."""
        self.job.cancel()
        self._cleanup(context)

    def _cleanup(self, context) -> None:
        wm = context.window_manager
        if getattr(self, "timer", None) is not None:
            wm.event_timer_remove(self.timer)
            self.timer = None
        self.job.close()
        api.set_active_job(None)
        wm.sheg_job.running = False
        _redraw(context)


class SHEG_OT_generate(_GenerationOperator, bpy.types.Operator):
    bl_idname = "sheg.generate"
    bl_label = "Generate"
    bl_description = "Generate gestures and expression for the sound strip (Esc cancels)"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, generate_problem(context))

    def _job(self, context) -> api.GenerationJob:
        settings = context.scene.sheg
        from_file = settings.audio_source == "FILE"
        return api.GenerationJob(
            strip=None if from_file else strip_audio.find_sound_strip(context.scene, settings.strip_name),
            audio_path=settings.audio_file if from_file else None, armature=settings.armature,
            face_mesh=settings.face_mesh, model=settings.model_path(), seed=settings.seed,
            steps=settings.step_count(), guidance=settings.guidance if settings.use_guidance else None,
            style=settings.style if settings.use_style else None, parts=settings.parts.lower(),
            key_options=settings.key_options())


class SHEG_OT_regenerate(_GenerationOperator, bpy.types.Operator):
    bl_idname = "sheg.regenerate_take"
    bl_label = "Regenerate"
    bl_description = ("A new take with the same audio that keeps the locked frames and parts of this take exactly "
                      "(Take Cleanup > Regenerate settings; Esc cancels)")
    bl_options = {"REGISTER", "UNDO"}

    take_name: bpy.props.StringProperty(name="Take", description="Take to regenerate (empty: the newest)")

    @classmethod
    def poll(cls, context):
        settings = context.scene.sheg
        return _poll_with_reason(cls, None if settings.armature is not None else "Choose the take's armature")

    def _job(self, context) -> api.GenerationJob:
        settings = context.scene.sheg
        return api.regeneration_job(context, settings.armature, settings.face_mesh, self.take_name or None,
                                    model=settings.model_path(), steps=settings.step_count(),
                                    key_options=settings.key_options(), **settings.lock())

    def invoke(self, context, event):
        try:
            return super().invoke(context, event)
        except ValueError as exc:  # a bad lock, before anything starts
            return self._fail(context, str(exc))


class SHEG_OT_cancel(bpy.types.Operator):
    bl_idname = "sheg.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running generation (the scene stays unchanged)"

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, None if api.active_job() else "Nothing is being generated")

    def execute(self, context):
        api.active_job().cancel()
        return {"FINISHED"}


class SHEG_OT_new_seed(bpy.types.Operator):
    bl_idname = "sheg.new_seed"
    bl_label = "New Seed"
    bl_description = "Pick a random seed for a different take"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.sheg
        seed = settings.seed
        while seed == settings.seed:
            seed = random.randrange(0, 2 ** 31 - 1)
        settings.seed = seed
        return {"FINISHED"}


class SHEG_OT_create_rig(bpy.types.Operator):
    bl_idname = "sheg.create_rig"
    bl_label = "Create SMPL-X Rig"
    bl_description = ("Add an SMPL-X armature with a face mesh and target it: the exact rig from your SMPL-X model "
                      "file when Preferences > SHEG > SMPL-X Model is set (read by the backend), else a stand-in "
                      "(no SMPL-X data needed)")
    bl_options = {"REGISTER", "UNDO"}

    with_face: BoolProperty(name="Face Mesh", default=True,
                            description="Expression shape keys Exp000.. (on the model's own mesh, or a stand-in face)")

    def execute(self, context):
        model_file = api.rig_model_file(context)
        window = context.window if model_file else None
        if window is not None:
            window.cursor_set("WAIT")  # the backend reads the model file: a few seconds
        try:
            armature, face = api.create_rig(with_face=self.with_face, context=context)
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        finally:
            if window is not None:
                window.cursor_set("DEFAULT")
        source = f" from {os.path.basename(model_file)}" if model_file else " (stand-in)"
        self.report({"INFO"}, f"Created '{armature.name}'" + (f" and '{face.name}'" if face else "") + source)
        return {"FINISHED"}


def _target_problem(context) -> str | None:
    armature = context.scene.sheg.armature
    return "Choose a target armature in the SHEG panel" if armature is None else None


PARTS_ITEMS = [("BOTH", "Both", "Body, hands, jaw and face"), ("GESTURE", "Gesture", "Body and hands only"),
               ("EXPRESSION", "Expression", "Face and jaw only")]


class SHEG_OT_import_take(bpy.types.Operator, ImportHelper):
    bl_idname = "sheg.import_take"
    bl_label = "Import Take"
    bl_description = "Apply a take .npz (SHEG, SMPL-X add-on, AMASS, BEAT2) to the target at the current frame"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    parts: EnumProperty(name="Parts", items=PARTS_ITEMS, default="BOTH")

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, _target_problem(context))

    def execute(self, context):
        try:
            info = api.import_take(self.filepath, start_frame=context.scene.frame_current, context=context,
                                   parts=self.parts.lower())
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported '{info['action']}': {info['frames']} frames from {info['start_frame']}")
        return {"FINISHED"}


class SHEG_OT_export_take(bpy.types.Operator, ExportHelper):
    bl_idname = "sheg.export_take"
    bl_label = "Export Take"
    bl_description = "Write a take (with your edits) as an SMPL-X/AMASS-compatible .npz"

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    take_name: StringProperty(name="Take")

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, _target_problem(context))

    def invoke(self, context, event):
        if not self.take_name:
            found = takes.list_takes(context.scene.sheg.armature)
            self.take_name = found[-1]["name"] if found else ""
        self.filepath = bpy.path.clean_name(self.take_name or "take") + self.filename_ext
        return super().invoke(context, event)

    def execute(self, context):
        try:
            takes.export_take(context, context.scene.sheg.armature, self.take_name, self.filepath)
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported '{self.take_name}' to {self.filepath}")
        return {"FINISHED"}


class SHEG_OT_remove_take(bpy.types.Operator):
    bl_idname = "sheg.remove_take"
    bl_label = "Remove Take"
    bl_description = "Remove this take's NLA tracks and action"
    bl_options = {"REGISTER", "UNDO"}

    take_name: StringProperty(name="Take")

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, _target_problem(context))

    def execute(self, context):
        try:
            takes.remove_take(context.scene.sheg.armature, self.take_name)
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        return {"FINISHED"}


class SHEG_OT_solo_take(bpy.types.Operator):
    bl_idname = "sheg.solo_take"
    bl_label = "Solo Take"
    bl_description = "Play only this take (click again to play all)"
    bl_options = {"REGISTER", "UNDO"}

    take_name: StringProperty(name="Take")
    solo: BoolProperty(name="Solo", default=True)

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, _target_problem(context))

    def execute(self, context):
        try:
            takes.solo_take(context.scene.sheg.armature, self.take_name, self.solo)
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        return {"FINISHED"}


def _store_check_summary(job) -> None:
    try:
        ShegPreferences.from_context(bpy.context).check_summary = job.summary or job.error
    except KeyError:
        pass  # the add-on was disabled meanwhile


class SHEG_OT_check_backend(bpy.types.Operator):
    bl_idname = "sheg.check_backend"
    bl_label = "Check Backend"
    bl_description = "Run the backend Python once and show what works and what is missing"

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        job = backend_env.start_check(prefs.backend_python(), prefs.device_name(), prefs.hubert(),
                                      bpy.path.abspath(prefs.smplx_model_path) if prefs.smplx_model_path else "",
                                      on_done=_store_check_summary, model_paths=prefs.model_folder_paths())
        if not job.running:
            self.report({"INFO"} if not job.error else {"ERROR"}, job.summary or job.error)
        return {"FINISHED"}


def _register_added_model(job) -> None:
    """On the main thread after an import: list the add-on's model folder (once) and select the new model."""
    if job.error or not job.report:
        return
    try:
        prefs = ShegPreferences.from_context(bpy.context)
    except KeyError:
        return  # the add-on was disabled meanwhile
    root = os.path.normpath(backend_env.models_root())
    if root not in {os.path.normpath(bpy.path.abspath(e.path)) for e in prefs.model_folders if e.path}:
        prefs.model_folders.add().path = root
    bpy.context.preferences.is_dirty = True
    scene = getattr(bpy.context, "scene", None)
    if scene is not None:
        scene.sheg.model = job.report["out"]
    _add_hubert_support_if_needed(prefs, job.report["out"])


def _add_hubert_support_if_needed(prefs, folder: str) -> None:
    """A model reading HuBERT features on a managed backend without the `hubert` extra: install it now (when
    online access allows; otherwise Check says what the model needs and the button is there)."""
    if (prefs.backend_mode == "MANAGED" and hubert_setup.folder_needs_hubert(folder)
            and backend_env.managed_lacks_hubert_support() and backend_env.hubert_support_problem() is None):
        backend_env.start_hubert_support(on_done=_store_check_summary)


class SHEG_OT_add_model(bpy.types.Operator):
    bl_idname = "sheg.add_model"
    bl_label = "Add Model…"
    bl_description = ("Convert a downloaded official DiffSHEG checkpoint (.tar, SHOW or BEAT, detected from its "
                      "contents) with its statistics into a model of this add-on, listed in the Model list")

    filepath: StringProperty(name="Checkpoint", subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.tar;*.pt;*.pth", options={"HIDDEN"})
    stats: StringProperty(name="Statistics", subtype="FILE_PATH",
                          description="DiffSHEG's assets/data.tar.gz, talkshow_mean_std.npy or the BEAT stats folder "
                                      "(empty: the one set in Preferences, else data.tar.gz beside the checkpoint)")

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, "A model is being added" if backend_env.IMPORT.running else None)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        checkpoint = bpy.path.abspath(self.filepath)
        stats = bpy.path.abspath(self.stats or prefs.add_stats_path) if (self.stats or prefs.add_stats_path) else \
            os.path.join(os.path.dirname(checkpoint), "data.tar.gz")
        try:
            job = backend_env.start_import(prefs.backend_python(), checkpoint, stats, on_done=_register_added_model)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not job.running:
            self.report({"ERROR"} if job.error else {"INFO"}, job.error or job.summary)
            return {"CANCELLED"} if job.error else {"FINISHED"}
        return {"FINISHED"}


class SHEG_OT_cancel_add_model(bpy.types.Operator):
    bl_idname = "sheg.cancel_add_model"
    bl_label = "Cancel Add Model"
    bl_description = "Stop converting the checkpoint (nothing is registered)"

    def execute(self, context):
        backend_env.cancel_import()
        return {"FINISHED"}


class SHEG_OT_accept_model_licence(bpy.types.Operator):
    bl_idname = "sheg.accept_model_licence"
    bl_label = "Accept Licence"
    bl_description = ("Accept the selected model's licence (official DiffSHEG weights: non-commercial research use "
                      "only) before its first use")

    @classmethod
    def poll(cls, context):
        prefs = ShegPreferences.from_context(context)
        return _poll_with_reason(cls, None if prefs.licence_problem(context.scene.sheg.model_path()) else
                                 "The selected model needs no licence acceptance")

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        prefs.accept_licence(context.scene.sheg.model_path())
        context.preferences.is_dirty = True
        return {"FINISHED"}


def _install_done(job) -> None:
    _store_check_summary(job)


class SHEG_OT_install_backend(bpy.types.Operator):
    bl_idname = "sheg.install_backend"
    bl_label = "Install Backend"
    bl_description = ("Create the managed backend environment: a Python venv with PyTorch and the bundled SHEG "
                      "backend (downloads about 1 GB for CPU, more for CUDA)")

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, backend_env.install_problem())

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        try:
            job = backend_env.start_install(prefs.device_name(), prefs.torch_index_url, on_done=_install_done,
                                            with_hubert=prefs.models_need_hubert())
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        if job.running:
            self.report({"INFO"}, f"Installing the backend in the background (log: {backend_env.install_log_path()})")
        return _report_job(self, job)


class SHEG_OT_cancel_install(bpy.types.Operator):
    bl_idname = "sheg.cancel_install"
    bl_label = "Cancel Install"
    bl_description = "Stop the running backend install (install again later to finish it)"

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, None if backend_env.INSTALL.running else "no backend install is running")

    def execute(self, context):
        backend_env.cancel_install()
        self.report({"INFO"}, "Cancelling the backend install")
        return {"FINISHED"}


def _report_job(operator, job) -> set:
    """What an operator that started a background job returns: running, or its error / summary at once."""
    if job.running:
        return {"FINISHED"}
    if job.error:
        operator.report({"ERROR"}, job.error)
        return {"CANCELLED"}
    operator.report({"INFO"}, job.summary)
    return {"FINISHED"}


class SHEG_OT_install_hubert_support(bpy.types.Operator):
    bl_idname = "sheg.install_hubert_support"
    bl_label = "Install HuBERT Support"
    bl_description = ("Install the backend's `hubert` extra (transformers, pinned; PyTorch stays as it is) into the "
                      "managed backend, for models that read HuBERT features")

    @classmethod
    def poll(cls, context):
        return _poll_with_reason(cls, backend_env.hubert_support_problem())

    def execute(self, context):
        try:
            job = backend_env.start_hubert_support(on_done=_store_check_summary)
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        return _report_job(self, job)


def _hubert_downloaded(job) -> None:
    """On the main thread after a download: point the HuBERT preference at the folder (only when it loads)."""
    if job.error or not job.report:
        return
    try:
        prefs = ShegPreferences.from_context(bpy.context)
    except KeyError:
        return  # the add-on was disabled meanwhile
    prefs.hubert_path = job.report["folder"]
    bpy.context.preferences.is_dirty = True


class SHEG_OT_download_hubert(bpy.types.Operator):
    bl_idname = "sheg.download_hubert"
    bl_label = "Download HuBERT"
    bl_description = ("Download facebook/hubert-large-ls960-ft (1.3 GB) into the add-on's user folder, check that it "
                      "loads and set the HuBERT folder to it; a cancelled or interrupted download resumes")

    @classmethod
    def poll(cls, context):
        prefs = ShegPreferences.from_context(context)
        return _poll_with_reason(cls, backend_env.hubert_download_problem(prefs.backend_python(),
                                                                           prefs.backend_mode == "MANAGED"))

    def execute(self, context):
        prefs = ShegPreferences.from_context(context)
        try:
            job = backend_env.start_hubert_download(prefs.backend_python(), prefs.hubert_endpoint,
                                                    managed=prefs.backend_mode == "MANAGED",
                                                    on_done=_hubert_downloaded)
        except ValueError as exc:
            self.report({"ERROR"}, one_line(str(exc)))
            return {"CANCELLED"}
        return _report_job(self, job)


class SHEG_OT_cancel_hubert_download(bpy.types.Operator):
    bl_idname = "sheg.cancel_hubert_download"
    bl_label = "Cancel HuBERT Download"
    bl_description = "Stop the HuBERT download (the bytes that arrived are kept: Download HuBERT again resumes)"

    def execute(self, context):
        backend_env.cancel_hubert_download()
        return {"FINISHED"}


classes = (SHEG_OT_generate, SHEG_OT_regenerate, SHEG_OT_cancel, SHEG_OT_new_seed, SHEG_OT_create_rig,
           SHEG_OT_import_take, SHEG_OT_export_take, SHEG_OT_remove_take, SHEG_OT_solo_take, SHEG_OT_check_backend,
           SHEG_OT_install_backend, SHEG_OT_cancel_install, SHEG_OT_add_model, SHEG_OT_cancel_add_model,
           SHEG_OT_accept_model_licence, SHEG_OT_install_hubert_support, SHEG_OT_download_hubert,
           SHEG_OT_cancel_hubert_download)
