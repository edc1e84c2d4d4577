"""`sheg eval`: generate a few takes for one audio file and print extractor-free metrics as a markdown table.

Rows: one per seed, their mean (with the diversity across seeds), the same motion scored against *mismatched* audio
(BC's null baseline: other files, averaged when several, or the same audio rotated by half its length), a static pose (BC's floor), and —
with --reference — the ground-truth take. Positions come from forward kinematics on the stand-in skeleton
(sheg.motion.skeleton) with translation zeroed; the reference is restricted to the joints the model generates (the others
at rest), so both sides are scored on the same body parts. See sheg.evaluation.metrics for the definitions.

With --clips FOLDER the same is done for every clip of a set (a take or SHOW fit with its audio), the mismatched
audio of each clip being the other clips' audio, and the rows are the per-clip means and the means over the set:
how a model is judged on speakers it never heard. "BC gap" = BC - BC mismatched audio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from sheg.evaluation import metrics
from sheg.data.audio import load_audio
from sheg.errors import BadInput
from sheg.motion.skeleton import forward_kinematics

METRIC_SR = 16000


def _score(poses: np.ndarray, fps: float, wave: np.ndarray, other_waves: list, mean_vel, seams=None,
           reference=None) -> dict:
    """Metrics of one take: poses (T, 165) at fps against wave and the mismatched other_waves (16 kHz; their BC is
    averaged, which steadies the null baseline), and against the reference poses of the same audio when given."""
    positions = forward_kinematics(poses)
    row = {}
    if mean_vel is not None:
        def bc(w):
            try:
                return metrics.beat_consistency(positions, w, METRIC_SR, fps, mean_vel)
            except ValueError:  # shorter than the 2 s + 2 s BC leaves out
                return float("nan")

        row["BC"] = bc(wave)
        row["BC mismatched audio"] = float(np.mean([bc(w) for w in other_waves]))
    row["L1div"] = metrics.l1_div(positions)
    stats = metrics.jerk_stats(positions, fps)
    row["jerk mean (m/s^3)"] = stats["jerk_mean"]
    row["jerk p95 (m/s^3)"] = stats["jerk_p95"]
    if seams is not None:
        seam = metrics.seam_jerk(positions, fps, seams)
        row["seam/within jerk"] = seam["seam_ratio"]
    row["jaw-RMS corr"] = metrics.jaw_energy_correlation(poses, wave, METRIC_SR, fps)
    if reference is not None:
        row["jaw-reference corr"] = metrics.jaw_reference_correlation(poses, reference)
    row["jaw silence/speech"] = metrics.jaw_silence_ratio(poses, wave, METRIC_SR, fps)
    row["speed mean (m/s)"] = float(metrics.joint_speeds(positions, fps)[:, list(metrics.UPPER_BODY_JOINTS)].mean())
    if "BC" in row:
        row["BC gap"] = row["BC"] - row["BC mismatched audio"]  # > 0: the rhythm follows this speech, not any speech
    return row


def _mean_row(rows: list, label: str) -> dict:
    out = {"take": label}
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values and key not in ("take", "seed"):
            finite = [v for v in values if not np.isnan(v)]
            out[key] = float(np.mean(finite)) if finite else float("nan")
    return out


def _crop(wave: np.ndarray, rate: float, start: float, end: float | None) -> np.ndarray:
    a = int(round(start * rate))
    b = len(wave) if end is None else min(len(wave), int(round(end * rate)))
    if b - a < 1:
        raise BadInput(f"the time range {start:g}..{end if end is not None else 'end'} s holds no audio "
                       f"(the file lasts {len(wave) / rate:.2f} s)")
    return wave[a:b]


def evaluate(model, audio: str, *, seeds=(0, 1, 2), reference: str | None = None, other_audio=None,
             mean_vel: str | None = None, steps: int | None = None, start: float = 0.0, end: float | None = None,
             style: int | None = None, guidance: float | None = None, log=None) -> list[dict]:
    """Metric rows (dicts) for `model` (a sheg.inference.unieg_model.Model) on the audio file `audio`.

    start/end (seconds) cut the audio and the reference to a range, e.g. a take's held-out last 10 s.
    """
    from sheg.data.windows import read_motion, resample_motion
    from sheg.diffusion.samplers import window_spans

    log = log or (lambda msg: None)
    mean_speed = None
    if mean_vel is not None:
        mean_speed = np.load(mean_vel)
        if mean_speed.shape != (55,):
            raise BadInput(f"{mean_vel} holds shape {mean_speed.shape}; expected the 55 per-joint mean speeds "
                           "(mean_vel_smplxflame_30.npy)")
    if start < 0 or (end is not None and end <= start):
        raise BadInput(f"--start must be >= 0 and --end after it, got {start:g}..{end}")
    wave = _crop(load_audio(audio, METRIC_SR), METRIC_SR, start, end)
    model_rate = model.sample_rate
    model_wave = _crop(load_audio(audio, model_rate), model_rate, start, end)
    others = [other_audio] if isinstance(other_audio, (str, os.PathLike)) else list(other_audio or [])
    if others:
        other = []
        for path in others:
            w = load_audio(path, METRIC_SR)
            other.append(np.resize(w, len(wave)) if len(w) < len(wave) else w[: len(wave)])
        other_label = ", ".join(os.path.basename(path) for path in others) + (" (BC averaged)" if len(others) > 1
                                                                              else "")
    else:
        other = [np.roll(wave, len(wave) // 2)]
        other_label = "same audio rotated by half"
    fps = model.fps

    # Joints the reference does not hold (a SHOW fit's hands) are left out of every row, the generated ones too.
    ref = read_motion(reference) if reference is not None else None
    scored = np.ones(55, bool) if ref is None else ref.known_joints
    if not scored.all():
        log(f"scoring without the {int((~scored).sum())} joints the reference does not hold (hands)")
    ref_poses = None
    if ref is not None:
        ref_poses, _ = resample_motion(ref.poses, np.zeros((len(ref.poses), 1)), ref.fps, fps)
        first = int(round(start * fps))
        ref_poses = ref_poses[first:]  # cut to the generated length below (scores use the common length)
        if len(ref_poses) < 4 or (end is not None and first + 4 > round(end * fps)):
            raise BadInput(f"the reference {reference} has no motion in the chosen time range")
    rows, samples, mask = [], [], None
    for seed in seeds:
        log(f"generating seed {seed} ...")
        take = model.generate((model_wave, model_rate), seed=int(seed), steps=steps, style=style, guidance=guidance)
        poses = take.arrays["poses"].reshape(take.frames, 55, 3).copy()
        poses[:, ~scored] = 0.0
        poses = poses.reshape(take.frames, -1)
        mask = take.arrays["generated_joints"]
        seams = [start for start, _ in window_spans(take.frames, model.window, model.overlap)[1:]]
        rows.append({"take": f"generated seed {seed}", **_score(poses, fps, wave, other, mean_speed, seams,
                                                                 ref_poses)})
        samples.append(forward_kinematics(poses))
    summary = _mean_row(rows, f"generated, mean of {len(rows)}")
    if len(samples) >= 2:
        summary["diversity across seeds"] = metrics.sample_diversity(samples)
    rows.append(summary)

    frames = len(samples[0])
    rows.append({"take": "static pose", **_score(np.zeros((frames, 165)), fps, wave, other, mean_speed)})
    if ref is not None:
        ref_poses = ref_poses[:frames].reshape(-1, 55, 3).copy()
        ref_poses[:, ~mask] = 0.0  # the joints the model does not generate stay at rest, as in generated takes
        ref_poses[:, ~scored] = 0.0
        rows.append({"take": "reference (ground truth)",
                     **_score(ref_poses.reshape(len(ref_poses), -1), fps, wave, other, mean_speed)})
    log(f"mismatched audio: {other_label}")
    return rows


def evaluate_clips(model, folder: str, *, seeds=(0, 1, 2), mean_vel: str | None = None, steps: int | None = None,
                   style: int | None = None, guidance: float | None = None, log=None) -> list[dict]:
    """Metric rows for a set of clips: every take file in `folder` (.npz or SHOW .pkl) with its same-named audio is
    generated from and scored against; its mismatched-audio BC averages over the audio of all the other clips.
    Rows: per clip, the generated mean and the reference; then the means over the clips of both."""
    from sheg.data.windows import find_takes

    pairs = find_takes([folder])
    if len(pairs) < 2:
        raise BadInput(f"{folder} holds {len(pairs)} clip(s): the mismatched-audio control needs at least two")
    rows, generated, references = [], [], []
    for motion, audio in pairs:
        name = os.path.splitext(os.path.basename(motion))[0]
        if log:
            log(f"clip {name}")
        others = [other for _, other in pairs if other != audio]
        clip = evaluate(model, audio, seeds=seeds, reference=motion, other_audio=others, mean_vel=mean_vel,
                        steps=steps, style=style, guidance=guidance, log=log)
        mean = next(r for r in clip if r["take"].startswith("generated, mean"))
        ref = next(r for r in clip if r["take"] == "reference (ground truth)")
        rows += [{**mean, "take": f"{name}: generated ({len(list(seeds))} seeds)"}, {**ref, "take": f"{name}: reference"}]
        generated.append(mean)
        references.append(ref)
    rows.append(_mean_row(generated, f"{len(pairs)} clips: generated"))
    rows.append(_mean_row(references, f"{len(pairs)} clips: reference"))
    return rows


def eval_main(args) -> int:
    from sheg.inference.load import load_model

    if args.seeds < 1:
        raise BadInput("--seeds must be at least 1")
    if (args.audio is None) == (args.clips is None):
        raise BadInput("give --audio FILE (one clip) or --clips FOLDER (a set of clips with references)")
    if args.clips is not None and (args.reference or args.other_audio or args.start or args.end is not None):
        raise BadInput("--clips takes each clip's reference and mismatched audio from the folder: leave out "
                       "--reference, --other-audio, --start and --end")
    if args.clips is not None and not os.path.isdir(args.clips):
        raise BadInput(f"--clips must be a folder of clips (take + audio): {args.clips} is not one")
    for path in [args.audio, args.reference, *(args.other_audio or []), args.mean_vel]:
        if path is not None and not os.path.isfile(path):
            raise BadInput(f"file not found: {path}")
    model = load_model(args.model, device=args.device)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.json else None
    if args.mean_vel is None and not args.json:
        print("sheg: note: no --mean-vel (mean_vel_smplxflame_30.npy): beat consistency is left out", file=sys.stderr)
    seeds = range(args.seed, args.seed + args.seeds)
    if args.clips is not None:
        rows = evaluate_clips(model, args.clips, seeds=seeds, mean_vel=args.mean_vel, steps=args.steps,
                              style=args.style, guidance=args.guidance, log=log)
    else:
        rows = evaluate(model, args.audio, seeds=seeds, reference=args.reference, other_audio=args.other_audio,
                        mean_vel=args.mean_vel, steps=args.steps, start=args.start, end=args.end, style=args.style,
                        guidance=args.guidance, log=log)
    if args.mean_vel is None:
        for row in rows:
            row.pop("BC mismatched audio", None)
    if args.json:
        print(json.dumps(rows, indent=1, default=float))
    else:
        print(metrics.format_table(rows))
    return 0


def build_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to `subparsers` (from sheg.cli); sets func=eval_main."""
    p = subparsers.add_parser("eval", help="metrics of a model on one audio file or a set of clips (markdown table)",
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder, or an embedded model's name (default, diffgesture-small)")
    p.add_argument("--audio", default=None, help="speech audio file to generate from")
    p.add_argument("--clips", default=None,
                   help="instead of --audio: a folder of clips (take .npz or SHOW .pkl + same-named audio), each "
                        "scored against its reference with the other clips' audio as the mismatched control")
    p.add_argument("--reference", default=None, help="ground-truth take .npz for the same audio (adds a row)")
    p.add_argument("--other-audio", action="append", default=None,
                   help="audio for the mismatched-audio BC baseline; repeat it to average several (default: the "
                        "audio rotated by half its length)")
    p.add_argument("--mean-vel", default=None,
                   help="EMAGE mean_vel_smplxflame_30.npy (per-joint mean speeds); needed for beat consistency")
    p.add_argument("--start", type=float, default=0.0, help="evaluate from this second of the audio/reference")
    p.add_argument("--end", type=float, default=None, help="evaluate up to this second (default: the end)")
    p.add_argument("--seeds", type=int, default=3, help="number of generated takes (seeds --seed, --seed+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--style", type=int, default=None, help="speaker/style slot to generate in (default: the model's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's; 1 = off)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.set_defaults(func=eval_main)
    return p
