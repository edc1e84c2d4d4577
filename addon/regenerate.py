"""Regenerate a take around what the artist locked: frame ranges and/or body parts of the take are kept exactly,
the rest is generated anew with the same audio (the backend inpaints inside its FOPPAS windows; worker protocol
`generate` with `keep`). The locked values are the take's F-curves as they play now, so edits on the take count;
locking the face ("regenerate gesture from this face") keeps the artist's expression and regenerates the body,
which UniEG conditions on that expression. The result is a new take (the old one stays); api.regenerate_take and
the Regenerate operator run it as a GenerationJob."""

from __future__ import annotations

import os


from . import strip_audio, takes
from .core import locks


def source_of(context, armature, take_name, lock_frames, lock_parts, seed) -> dict:
    """GenerationJob keywords for regenerating `take_name` (default: the armature's newest take): its audio (the
    sound strip it was generated from, else its audio file at its start frame), seed (default: the take's + 1),
    parts, and the lock. ValueError (one line) when nothing is locked or the audio is gone."""
    if not take_name:
        listed = takes.list_takes(armature)
        if not listed:
            raise ValueError(f"'{armature.name}' has no take to regenerate: generate one first")
        take_name = listed[-1]["name"]
    action = takes._find_take_action(armature, take_name)
    if lock_frames is None and not lock_parts:
        raise ValueError("lock a frame range or body parts to regenerate around (or Generate a new take)")
    if lock_frames is not None:
        first, last = (float(v) for v in lock_frames)
        if first > last:
            raise ValueError(f"locked frames {first:g}-{last:g}: the first frame must not be after the last")
        lock_frames = (first, last)
    parts = locks.check_parts(lock_parts) if lock_parts else None
    strip_name = action.get("sheg_strip", "")
    audio = {}
    if strip_name:
        strip = strip_audio.find_sound_strip(context.scene, strip_name)
        if strip is None or strip.name != strip_name:
            raise ValueError(f"the take's sound strip '{strip_name}' is gone; regenerate needs the same audio")
        audio = {"strip": strip}
    else:
        path = str(action.get("sheg_audio_file", ""))
        if not path or not os.path.isfile(path):
            raise ValueError(f"the take's audio file '{path}' is gone; regenerate needs the same audio")
        audio = {"audio_path": path, "start_frame": int(action.get("sheg_start_frame", 1))}
    old_seed = int(action.get("sheg_seed", 0))
    return {**audio, "seed": old_seed + 1 if seed is None else int(seed),
            "parts": str(action.get("sheg_parts", "both")) or "both",
            "lock": {"take": take_name, "frames": lock_frames, "parts": parts}}


def keep_request(context, armature, lock: dict, folder: str) -> dict:
    """Export the locked take into `folder` and return the worker's `keep` field: take file, take frame ranges of
    the locked scene frames (None: all), part names (None: all)."""
    path = os.path.join(folder, "keep.npz")
    takes.export_take(context, armature, lock["take"], path)
    ranges = None
    if lock.get("frames") is not None:
        _, _, scene_frames = takes.take_scene_frames(context, takes._find_take_action(armature, lock["take"]))
        ranges = locks.take_frame_ranges(scene_frames, *lock["frames"])
    return {"take": path, "frames": ranges, "parts": lock.get("parts")}


def mark_take(action, strip_name: str | None, lock: dict | None) -> None:
    """Provenance on a new take action: the sound strip it came from (so it can be regenerated), and what a
    regeneration kept."""
    if strip_name:
        action["sheg_strip"] = strip_name
    if lock:
        action["sheg_regenerated_from"] = lock["take"]
        if lock.get("frames") is not None:
            action["sheg_locked_frames"] = [float(v) for v in lock["frames"]]
        if lock.get("parts"):
            action["sheg_locked_parts"] = ",".join(lock["parts"])
