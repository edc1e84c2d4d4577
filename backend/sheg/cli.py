"""The `sheg` command line: generate, worker, import-diffsheg, smplx-rig, doctor, train, eval, bench.

Errors the user can fix print one line `sheg: error: ...` and exit with code 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from sheg.version import __version__
from sheg.errors import ShegError, os_error_line
from sheg.io.take import check_writable

EXIT_USAGE = 2


def _add_generate(sub) -> None:
    from sheg.motion.layouts import PARTS

    p = sub.add_parser("generate", help="generate takes (.npz) from speech audio files",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("-o", "--out", required=True,
                   help="output .npz (one audio file) or folder (one take per audio file, named after it)")
    p.add_argument("--model", default=None,
                   help="model folder, or an embedded model's name: default, diffgesture-small (default: default)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same take")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's, usually 25)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--style", type=int, default=None, help="speaker/style index of the model")
    p.add_argument("--overlap", type=int, default=None, help="FOPPAS window overlap in frames")
    p.add_argument("--jumps", type=int, default=None, help="FOPPAS resampling jumps per jump point (1 = none)")
    p.add_argument("--no-resample", action="store_true", help="FOPPAS fast mode: no RePaint resampling jumps")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="compute device")
    p.add_argument("--hubert", default=None, help="HuBERT-large folder or model id (models that use HuBERT)")
    p.add_argument("--keep", default=None,
                   help="constrained regeneration: a take .npz of the same audio whose values are kept exactly")
    p.add_argument("--keep-frames", default=None,
                   help="with --keep: take frames to keep, START:STOP from 0, STOP excluded, comma-separated "
                        "(default: all)")
    p.add_argument("--keep-parts", default=None,
                   help="with --keep: body parts to keep, comma-separated, of: " + ", ".join(PARTS)
                        + " (default: all)")
    p.add_argument("--fps-mode", default=None, choices=["native", "official-15"],
                   help="official-15: the official SHOW custom-audio path (mel hop 1200 at 18 kHz, 15 frames/s) "
                        "instead of the model's 30 fps (default: the model card's fps_mode, else native)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _outputs_for(audio: list[str], out: str) -> list[str]:
    if len(audio) == 1 and out.lower().endswith(".npz"):
        check_writable(out)
        return [out]
    if os.path.exists(out) and not os.path.isdir(out):
        raise ShegError(f"{out} exists and is not a folder: with several audio files, -o must be a folder")
    names = [os.path.splitext(os.path.basename(a))[0] + ".npz" for a in audio]
    if len(set(names)) != len(names):
        raise ShegError("two audio files have the same name: generate them into different folders")
    outputs = [os.path.join(out, n) for n in names]
    for path in outputs:
        check_writable(path)
    return outputs


def cmd_generate(args) -> int:
    from sheg.inference.load import load_model

    for path in args.audio:  # fail before loading anything
        if os.path.isdir(path):
            raise ShegError(f"{path} is a folder, not an audio file: name the files inside it")
        if not os.path.isfile(path):
            raise ShegError(f"audio file not found: {path}")
    outputs = _outputs_for(args.audio, args.out)
    keep = {}
    if args.keep is not None:
        if len(args.audio) != 1:
            raise ShegError("--keep regenerates one take: give exactly one audio file")
        keep = {"keep": args.keep, "keep_frames": args.keep_frames, "keep_parts": args.keep_parts}
        if not os.path.isfile(args.keep):
            raise ShegError(f"take to keep not found: {args.keep}")
    elif args.keep_frames is not None or args.keep_parts is not None:
        raise ShegError("--keep-frames and --keep-parts need --keep TAKE.npz (the take whose values are kept)")
    model = load_model(args.model, device=args.device, hubert=args.hubert, fps_mode=args.fps_mode)
    results = []
    for audio, out in zip(args.audio, outputs):
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=100, desc=os.path.basename(audio), unit="%", file=sys.stderr,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

        def progress(event, bar=bar):
            if bar is not None and event.get("stage") == "sampling":
                bar.n = int(100 * event["fraction"])
                bar.set_postfix_str(f"window {event['window']}/{event['windows']}", refresh=True)

        try:
            take = model.generate(audio, seed=args.seed, steps=args.steps, guidance=args.guidance, style=args.style,
                                  overlap=args.overlap, jumps=args.jumps, resample=not args.no_resample,
                                  progress=progress, **keep)
        finally:
            if bar is not None:
                bar.n = bar.total if bar.n else bar.n
                bar.close()
        take.save(out)
        written = [os.path.abspath(out)]
        if "arkit_weights" in take.arrays:
            json_path = os.path.splitext(out)[0] + "_arkit.json"
            take.save_arkit_json(json_path)
            written.append(os.path.abspath(json_path))
        results.append({"audio": os.path.abspath(audio), "out": written[0], "files": written,
                        "frames": take.frames, "fps": take.fps, "seconds": take.meta["seconds"],
                        "seed": args.seed, "model": model.model_id})
        if not args.json:
            print(f"{audio} -> {out} ({take.frames} frames at {take.fps:g} fps, {take.meta['seconds']:.1f} s)",
                  file=sys.stderr)
    if args.json:
        print(json.dumps({"takes": results}, indent=1))
    return 0


def _add_import(sub) -> None:
    p = sub.add_parser("import-diffsheg", help="convert an official DiffSHEG checkpoint to a model folder")
    p.add_argument("checkpoint", help="official .tar checkpoint (e.g. ckpt_e2599.tar or fgd_best.tar)")
    p.add_argument("--profile", default=None, choices=["show", "beat"],
                   help="which official model it is (default: detected from the checkpoint's keys and shapes)")
    p.add_argument("--stats", required=True,
                   help="normalization statistics: DiffSHEG's assets/data.tar.gz, or from it SHOW "
                        "talkshow_mean_std.npy or the BEAT stats folder")
    p.add_argument("-o", "--out", required=True, help="model folder to create")
    p.add_argument("--json", action="store_true",
                   help="JSON lines on stdout: {'event': 'progress', 'stage', 'fraction'} then {'event': 'done', ...}")


def cmd_import(args) -> int:
    from sheg.io.checkpoint import import_diffsheg, read_model_meta

    def progress(stage, fraction):
        if args.json:
            print(json.dumps({"event": "progress", "stage": stage, "fraction": fraction}), flush=True)

    out = import_diffsheg(args.checkpoint, args.profile, args.stats, args.out, progress=progress)
    meta = read_model_meta(out)
    if args.json:
        print(json.dumps({"event": "done", "out": os.path.abspath(out), "name": meta["name"],
                          "profile": meta["layout"], "fps": meta["fps"], "license": meta["license"]}), flush=True)
    print(f"wrote model folder {args.out} ({meta['layout'].upper()} profile)", file=sys.stderr)
    return 0


def _add_import_diffgesture(sub) -> None:
    p = sub.add_parser("import-diffgesture",
                       help="convert an official DiffGesture checkpoint (pose_diffusion_checkpoint_499.bin)")
    p.add_argument("checkpoint", help="official .bin checkpoint (read without executing any code it holds)")
    p.add_argument("-o", "--out", required=True, help="model folder to create")


def cmd_import_diffgesture(args) -> int:
    from sheg.io.diffgesture_dir import import_diffgesture

    import_diffgesture(args.checkpoint, args.out)
    print(f"wrote model folder {args.out}", file=sys.stderr)
    return 0


def _add_smplx_rig(sub) -> None:
    p = sub.add_parser("smplx-rig", help="read your SMPL-X model file (needs the `smplx` package) into a rig .npz "
                                         "for the Blender add-on's exact SMPL-X rig")
    p.add_argument("model", help="SMPLX_NEUTRAL.npz from smpl-x.is.tue.mpg.de (or the folder holding "
                                 "SMPLX_<GENDER>.npz)")
    p.add_argument("-o", "--out", required=True, help="rig .npz to write")
    p.add_argument("--gender", default=None, choices=["neutral", "male", "female"],
                   help="which file of a folder (default neutral); a file's gender comes from its name")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def cmd_smplx_rig(args) -> int:
    from sheg.io.smplx_rig import export_rig

    summary = export_rig(args.model, args.out, gender=args.gender)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['source_file']} -> {args.out} ({summary['vertices']} vertices, {summary['faces']} faces, "
              f"{summary['expressions']} expressions)", file=sys.stderr)
    return 0


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="which models this Python can run, what each still needs and how to fix it")
    p.add_argument("models", nargs="*", help="model folders, or folders holding model folders (embedded models are "
                                             "always listed)")
    p.add_argument("--hubert", default=None, help="HuBERT-large folder or model id the models would use")
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout (for the add-on)")


def cmd_doctor(args) -> int:
    from sheg.doctor import diagnose, format_report

    report = diagnose(args.models, hubert=args.hubert)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _add_download_hubert(sub) -> None:
    p = sub.add_parser("download-hubert", help="download facebook/hubert-large-ls960-ft into a folder (resumable) "
                                               "and check that it loads")
    p.add_argument("-o", "--out", required=True, help="folder to download into (pass it later as --hubert)")
    p.add_argument("--repo", default=None, help="Hugging Face repository (default: facebook/hubert-large-ls960-ft)")
    p.add_argument("--endpoint", default=None, help="hub endpoint (default: $HF_ENDPOINT, else Hugging Face)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines on stdout: {'event': 'progress', 'stage': 'download', 'file', 'done', 'total'} "
                        "..., {'event': 'progress', 'stage': 'check'}, then {'event': 'done', 'folder', ...}")


def cmd_download_hubert(args) -> int:
    from sheg.io.hubert_download import HUBERT_ID, download_hubert

    last = {}

    def progress(event):
        # one line per file and per percent is plenty for a progress bar
        key = (event.get("file"), 100 * event.get("done", 0) // max(1, event.get("total", 0)))
        if args.json and key != last.get("key"):
            last["key"] = key
            print(json.dumps({"event": "progress", **event}), flush=True)

    result = download_hubert(args.out, args.repo or HUBERT_ID, args.endpoint, progress=progress)
    if args.json:
        print(json.dumps({"event": "done", **result}), flush=True)
    print(f"HuBERT in {result['folder']} loads ({result['hidden_size']}-wide features)", file=sys.stderr)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed figures: model calls, seconds per generated second, sampler overhead",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", action="append", default=None,
                   help="model folder (repeatable); default: official-size SHOW and BEAT configs, random weights")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length to generate")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--jumps", type=int, default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--json", action="store_true")


def cmd_bench(args) -> int:
    from sheg.bench import run_bench

    rows = run_bench(models=args.model, seconds=args.seconds, device=args.device, steps=args.steps,
                     jumps=args.jumps, dtype=args.dtype)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def _add_test_model(sub) -> None:
    p = sub.add_parser("make-test-model", help="write a tiny random model folder (for tests of the plumbing)")
    p.add_argument("out", help="model folder to create")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default="show", choices=["show", "beat"],
                   help="SMPL-X upper body + expressions at 30 fps, or BEAT skeleton + 51 ARKit weights at 15 fps")


def cmd_make_test_model(args) -> int:
    from sheg.testing import make_tiny_model_dir

    make_tiny_model_dir(args.out, seed=args.seed, layout=args.layout)
    print(f"wrote tiny random model {args.out}", file=sys.stderr)
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (not the usage block first), like every other sheg error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"sheg: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sheg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sheg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_generate(sub)
    sub.add_parser("worker", help="JSON-lines worker on stdin/stdout (used by the Blender add-on)")
    _add_import(sub)
    _add_import_diffgesture(sub)
    _add_smplx_rig(sub)
    _add_doctor(sub)
    _add_download_hubert(sub)
    _add_bench(sub)
    _add_test_model(sub)
    try:
        from sheg.train.loop import build_parser as add_train
        add_train(sub)
    except ImportError:
        pass
    try:
        from sheg.evaluation.evaluate import build_parser as add_eval
        add_eval(sub)
    except ImportError:
        pass
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"generate": cmd_generate, "import-diffsheg": cmd_import,
                "import-diffgesture": cmd_import_diffgesture, "smplx-rig": cmd_smplx_rig, "doctor": cmd_doctor,
                "download-hubert": cmd_download_hubert,
                "bench": cmd_bench,
                "make-test-model": cmd_make_test_model}
    try:
        if args.command == "worker":
            from sheg.worker import run_worker

            return run_worker()
        if args.command in handlers:
            return handlers[args.command](args)
        if hasattr(args, "func"):
            return args.func(args) or 0
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except ShegError as exc:
        print(f"sheg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"sheg: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sheg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line; the traceback on request
        if os.environ.get("SHEG_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"sheg: error: internal error ({type(exc).__name__}: {first}); please report it with the output of "
              f"SHEG_DEBUG=1 sheg {args.command} ...", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
