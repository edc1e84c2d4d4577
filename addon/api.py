"""Generation from Python: the job the Generate button runs, and blocking helpers for scripts.

    from bl_ext.user_default.sheg import api
    info = api.generate(strip="speech", armature=bpy.data.objects["SMPLX-neutral"], seed=3)

A GenerationJob exports the audio to a WAV, asks the session's backend worker for a take and, once it is done,
writes the take into the scene (takes.apply_take). The modal operator advances it with tick() on a timer; scripts
and background mode (where modal operators and timers never run) call run_blocking().
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import bpy

from . import backend_env, regenerate, rig, strip_audio, takes
from .core import rigfile, takefile, worker_client
from .core.worker_client import DONE, FAILED, RUNNING, WorkerError
from .prefs import ShegPreferences

# the panel says gesture/expression/both; takes.apply_take says body/face/both
PARTS = {"gesture": "body", "body": "body", "expression": "face", "face": "face", "both": "both"}

_active_job = None  # the job the UI is running, so Cancel and the panel can reach it


def active_job():
    return _active_job if _active_job is not None and _active_job.state == RUNNING else None


def take_parts(parts: str) -> str:
    try:
        return PARTS[parts.lower()]
    except KeyError:
        raise ValueError(f"unknown parts '{parts}': use 'gesture', 'expression' or 'both'") from None


# --- validation shared by the operator's poll and the API ---------------------------------------------------------

def audio_problem(scene, strip=None, audio_path=None) -> str | None:
    if audio_path:
        path = bpy.path.abspath(audio_path)
        return None if os.path.isfile(path) else f"Audio file not found: {path}"
    if strip is None:
        return "No sound strip: add one in the Sequencer and select it (or choose an audio file)"
    return strip_audio.strip_problem(scene, strip)


def target_problem(armature, face_mesh, parts: str) -> str | None:
    if armature is None:
        return "Choose a target armature, or click Create SMPL-X Rig"
    try:
        rig.find_smplx_bones(armature)
    except ValueError as exc:
        return str(exc)
    if take_parts(parts) == "face" and face_mesh is None:
        return "Expression only needs a face mesh with expression shape keys"
    if face_mesh is not None and take_parts(parts) != "body":
        try:
            rig.find_expression_keys(face_mesh)
        except ValueError as exc:
            return str(exc)
    return None


def backend_problem(context, python: str | None = None) -> str | None:
    if python:
        return None if os.path.isfile(python) else f"Backend Python not found: {python}"
    return ShegPreferences.from_context(context).backend_problem()


# --- the job -------------------------------------------------------------------------------------------------------

def _model_label(model: str | None) -> str:
    return "default" if not model else os.path.basename(os.path.normpath(model))


def _take_name(audio_label: str, model: str | None, seed: int) -> str:
    stem = os.path.splitext(os.path.basename(audio_label))[0] or "take"
    return f"{stem[:30]} {_model_label(model)[:20]} s{seed}"


class GenerationJob:
    """One generation: start() (audio export + worker request), tick() until not RUNNING, finish() or close()."""

    def __init__(self, *, strip=None, audio_path=None, armature, face_mesh=None, model=None, seed=0, steps=25,
                 guidance=None, style=None, parts="both", python=None, start_frame=None, name=None,
                 key_options=None, lock=None):
        self.key_options = dict(key_options or {})
        # regeneration: {"take": take name, "frames": (first, last) scene frames or None, "parts": [...] or None}
        self.lock = dict(lock) if lock else None
        self.strip_name = strip.name if strip is not None else None
        self.audio_path = bpy.path.abspath(audio_path) if audio_path else None
        self.armature_name = armature.name if armature is not None else None
        self.face_name = face_mesh.name if face_mesh is not None else None
        self.model = model or None
        self.seed, self.steps, self.guidance, self.style = int(seed), int(steps), guidance, style
        self.parts = take_parts(parts)
        self.python = python
        self.start_frame = start_frame
        self.name = name
        self.task: worker_client.GenerateTask | None = None
        self.tmp_dir: str | None = None
        self.source_audio = ""
        self.started_at = 0.0
        self._failed_early = ""

    # state seen by the UI
    @property
    def state(self) -> str:
        if self._failed_early:
            return FAILED
        return self.task.state if self.task is not None else RUNNING

    @property
    def fraction(self) -> float:
        return self.task.fraction if self.task is not None else 0.0

    @property
    def stage(self) -> str:
        return self.task.stage if self.task is not None else "Preparing audio"

    @property
    def error(self) -> str:
        return self._failed_early or (self.task.error if self.task is not None else "")

    def start(self, context) -> "GenerationJob":
        """Export the audio and send the request; raises ValueError/WorkerError (one line) when it cannot start."""
        scene = context.scene
        prefs = ShegPreferences.from_context(context)
        armature = bpy.data.objects.get(self.armature_name) if self.armature_name else None
        face = bpy.data.objects.get(self.face_name) if self.face_name else None
        strip = strip_audio.find_sound_strip(scene, self.strip_name) if self.strip_name else None
        problem = (audio_problem(scene, strip, self.audio_path) or target_problem(armature, face, self.parts)
                   or backend_problem(context, self.python))
        if problem:
            raise ValueError(problem)
        self.tmp_dir = tempfile.mkdtemp(prefix="sheg-job-")
        wav = os.path.join(self.tmp_dir, "audio.wav")
        try:
            if self.audio_path:
                start, _ = strip_audio.export_file_wav(context, self.audio_path, wav, self.start_frame)
                self.source_audio = self.audio_path
            else:
                start, _ = strip_audio.export_strip_wav(context, strip, wav)
                self.source_audio = strip_audio.sound_file_path(strip.sound)
                if self.start_frame is not None:
                    start = int(self.start_frame)
            self.start_frame = start
            if not self.name:
                self.name = _take_name(self.source_audio or (self.strip_name or ""), self.model, self.seed)
            keep = regenerate.keep_request(context, armature, self.lock, self.tmp_dir) if self.lock else None
            python = self.python or prefs.backend_python()
            client = worker_client.session_client(python, state_dir=backend_env.worker_state_dir(),
                                                  log_path=backend_env.worker_log_path())
            self.task = worker_client.GenerateTask(
                client, audio=wav, out=os.path.join(self.tmp_dir, "take.npz"), model=self.model,
                device=prefs.device_name(), hubert=prefs.hubert(), seed=self.seed, steps=self.steps,
                guidance=self.guidance, style=self.style, keep=keep).start()
        except BaseException:
            self.close()
            raise
        self.started_at = time.monotonic()
        return self

    def tick(self) -> str:
        """Non-blocking: drain the worker's events."""
        return self.task.tick() if self.task is not None else self.state

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def finish(self, context) -> dict:
        """Write the finished take into the scene (one new Action on new NLA tracks); returns apply_take's info."""
        if self.state != DONE:
            raise WorkerError(self.error or f"generation {self.state}")
        armature = bpy.data.objects.get(self.armature_name)
        if armature is None:
            raise ValueError(f"the armature '{self.armature_name}' was removed while generating")
        face = bpy.data.objects.get(self.face_name) if self.face_name else None
        take = takefile.read_take(self.task.result["out"])
        take = dataclasses.replace(take, audio_file=self.source_audio or take.audio_file)
        info = takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=self.start_frame,
                                name=self.name, parts=self.parts, **self.key_options)
        regenerate.mark_take(bpy.data.actions[info["action"]], self.strip_name, self.lock)
        info.update(name=self.name, seed=self.seed, model=self.model or "default", steps=self.steps,
                    audio=self.source_audio, worker_seconds=self.task.result.get("seconds"))
        return info

    def close(self) -> None:
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None

    def run_blocking(self, context, timeout: float | None = None, on_progress=None) -> dict:
        """start() .. finish() without an event loop (scripts, background mode)."""
        try:
            if self.task is None:
                self.start(context)
            self.task.run_blocking(timeout=timeout, on_progress=on_progress)
            return self.finish(context)
        finally:
            self.close()


def set_active_job(job) -> None:
    global _active_job
    _active_job = job


# --- blocking helpers for scripts ----------------------------------------------------------------------------------

def generate(strip=None, audio_path=None, armature=None, face_mesh=None, model=None, seed=0, steps=25,
             guidance=None, style=None, parts="both", python=None, *, context=None, start_frame=None, name=None,
             timeout=None, **options) -> dict:
    """Generate a take and write it into the scene; blocks until done. Returns the take's info (name, action,
    frames, start_frame, end_frame, ...). Raises ValueError/WorkerError with one line on bad input or failure.

    strip: a SoundStrip or its name (default: the panel's strip, else the active/only sound strip);
    audio_path: an audio file instead, placed at `start_frame` (default: current frame);
    armature/face_mesh: objects (default: the panel's); model: model folder, or an embedded model's name such as
    "diffgesture-small" (None: the embedded default);
    parts: 'gesture', 'expression' or 'both'; python: backend Python (default: the preferences').
    options: keys='dense'|'reduced', rotation_tolerance_deg, location_tolerance, shape_tolerance, smoothing
    (default: the panel's key settings).
    """
    context = context or bpy.context
    scene = context.scene
    settings = scene.sheg
    if isinstance(strip, str):
        name_of_strip = strip
        strip = strip_audio.find_sound_strip(scene, strip)
        if strip is None:
            raise ValueError(f"no sound strip named '{name_of_strip}' in scene '{scene.name}'")
    if strip is None and not audio_path:
        strip = strip_audio.find_sound_strip(scene, settings.strip_name)
    armature = armature if armature is not None else settings.armature
    face_mesh = face_mesh if face_mesh is not None else settings.face_mesh
    job = GenerationJob(strip=strip, audio_path=audio_path, armature=armature, face_mesh=face_mesh, model=model,
                        seed=seed, steps=steps, guidance=guidance, style=style, parts=parts, python=python,
                        start_frame=start_frame, name=name, key_options=key_options(settings, options))
    return job.run_blocking(context, timeout=timeout)


def regenerate_take(take=None, armature=None, face_mesh=None, *, lock_frames=None, lock_parts=None, seed=None,
                    model=None, steps=25, python=None, context=None, name=None, timeout=None, **options) -> dict:
    """Regenerate a take with the same audio, keeping what is locked exactly; the new take is written like a
    generated one (the old one stays). Blocks until done; returns the new take's info.

    take: the take's name (default: the armature's newest); lock_frames: (first, last) scene frames, inclusive
    (None: every frame); lock_parts: body-part names of core.locks.LOCK_PARTS, e.g. ["left_arm"] or ["face"]
    (regenerate gesture from this face) (None: all parts); at least one of the two. seed: default the take's + 1;
    model: default the embedded one. The locked values are the take's F-curves as they play now (edits included).
    options: as generate().
    """
    context = context or bpy.context
    settings = context.scene.sheg
    armature = armature if armature is not None else settings.armature
    face_mesh = face_mesh if face_mesh is not None else settings.face_mesh
    job = regeneration_job(context, armature, face_mesh, take, lock_frames=lock_frames, lock_parts=lock_parts,
                           seed=seed, model=model, steps=steps, python=python, name=name,
                           key_options=key_options(settings, options))
    return job.run_blocking(context, timeout=timeout)


def regeneration_job(context, armature, face_mesh, take=None, *, lock_frames=None, lock_parts=None, seed=None,
                     model=None, steps=25, python=None, name=None, key_options=None) -> GenerationJob:
    """The GenerationJob of a regeneration (see regenerate_take); ValueError (one line) for a bad lock."""
    if armature is None:
        raise ValueError("no armature: pass armature= or choose one in the SHEG panel")
    source = regenerate.source_of(context, armature, take, lock_frames, lock_parts, seed)
    return GenerationJob(armature=armature, face_mesh=face_mesh, model=model, steps=steps, python=python,
                         name=name, key_options=key_options, **source)


def key_options(settings, overrides: dict) -> dict:
    """The scene's key settings (keys, tolerances, smoothing) with explicit keyword arguments on top."""
    unknown = set(overrides) - set(takes.KEY_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}: use {', '.join(takes.KEY_OPTIONS)}")
    return {**settings.key_options(), **{k: v for k, v in overrides.items() if v is not None}}


def import_take(filepath, armature=None, face_mesh=None, start_frame=None, *, context=None, parts="both",
                **options) -> dict:
    """Import an SMPL-X/AMASS/BEAT2 .npz as a take. options: keys='dense'|'reduced', rotation_tolerance_deg,
    location_tolerance, shape_tolerance, smoothing (default: the panel's key settings)."""
    context = context or bpy.context
    settings = context.scene.sheg
    armature = armature if armature is not None else settings.armature
    if armature is None:
        raise ValueError("no armature: pass armature= or choose one in the SHEG panel")
    return takes.import_take(context, bpy.path.abspath(filepath), armature=armature,
                             face_mesh=face_mesh if face_mesh is not None else settings.face_mesh,
                             start_frame=start_frame, parts=take_parts(parts),
                             **key_options(settings, options))


def rig_model_file(context=None, model_file=None) -> str:
    """The SMPL-X model file Create SMPL-X Rig reads (absolute), or "" for the stand-in rig.

    model_file None: the preference's SMPL-X Model; "": the stand-in even when the preference is set."""
    if model_file is None:
        model_file = ShegPreferences.from_context(context).smplx_model_path
    return bpy.path.abspath(model_file) if model_file else ""


def create_rig(name=None, with_face=True, *, context=None, model_file=None, python=None):
    """SMPL-X rig (+ face mesh); also chosen as the panel's target. Returns (armature, face or None).

    With an SMPL-X model file (model_file=, else Preferences > SMPL-X Model) the rig is exact: the backend Python
    (python=, else the preferences') reads the file with the `smplx` package (blocks a few seconds), and the rig
    gets the model's rest joints, its mesh with skinning weights and its expression shape keys on one mesh
    `<name>-mesh` (also the face returned). Without one (or model_file=""): the stand-in rig, no SMPL-X data needed.
    name defaults to SMPLX-<gender>. Raises ValueError (one line) and leaves the scene unchanged on failure.
    """
    context = context or bpy.context
    path = rig_model_file(context, model_file)
    if path:
        problem = backend_problem(context, python)
        if problem:
            raise ValueError(f"{problem} (needed to read the SMPL-X model file)")
        python = python or ShegPreferences.from_context(context).backend_python()
        model = rigfile.rig_from_model_file(python, path)
        armature, face = rig.create_smplx_rig(context, name=name or f"SMPLX-{model.gender}", with_face=with_face,
                                              model=model)
    else:
        armature, face = rig.create_smplx_rig(context, name=name or "SMPLX-neutral", with_face=with_face)
    context.scene.sheg.armature = armature
    if face is not None:
        context.scene.sheg.face_mesh = face
    return armature, face
