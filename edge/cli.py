"""The `edge` command: one sub-command per job, each with a clear exit status."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from edge import __version__, logs
from edge.config import (
    EX_CONFIG,
    CameraConfig,
    ConfigError,
    StorageError,
    broker_user_problem,
    json_schema,
    load_config,
    prepare_storage,
    storage_problem,
)
from edge.progress import Progress
from edge.video import VideoError

EX_OK, EX_USAGE = 0, 64


def _err(msg: str) -> None:
    print(f"edge: error: {msg}", file=sys.stderr)


def cmd_check_config(args) -> int:
    cfg = load_config(args.file)
    problem = storage_problem(cfg)
    if problem:  # a warning: the service may run as another user, or systemd may create the folder for it
        print(f"edge: warning: storage.dir {cfg.storage.dir}: {problem}; `edge run` exits 73", file=sys.stderr)
    acl = broker_user_problem(cfg)
    if acl:  # a warning: another broker's ACL may map users otherwise
        print(f"edge: warning: {acl}", file=sys.stderr)
    for name, cam in cfg.cameras.items():
        for warning in _camera_warnings(cam):
            print(f"edge: warning: cameras.{name}.{warning}", file=sys.stderr)
    cams = ", ".join(
        f"{n} ({'calibrated' if c.facade else 'no facade calibration'})" for n, c in cfg.cameras.items()
    )
    print(f"{args.file}: OK: node {cfg.node.id}, cameras: {cams}")
    return EX_OK


def _camera_warnings(cam: CameraConfig) -> list[str]:
    """What check-config says of a camera without refusing it: the node runs so, but likely not as meant."""
    warnings = []
    reference = cam.health.reference  # without it the node learns a reference at start
    if reference is not None and not reference.is_file():
        warnings.append(
            f"health.reference {reference}: there is no such file; the moved check would learn its reference "
            "from the first pictures, and miss a camera already turned"
        )
    outside = cam.facade.points_outside_image() if cam.facade else []  # a survey's points may lie outside
    if outside:
        w, h = cam.facade.image_size
        warnings.append(
            f"facade: points {outside} lie outside image_size [{w}, {h}]; if they were measured on a larger "
            "image, set image_size to its size, or every floor is wrong"
        )
    return warnings


def cmd_config_schema(args) -> int:
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    return EX_OK


def cmd_replay(args) -> int:
    from edge.replay import replay

    cfg = load_config(args.config)
    bar = Progress("replay", None if not args.quiet else False)
    result = replay(
        args.video,
        cfg,
        args.camera,
        args.out,
        on_alert=None if args.quiet else _print_alert,
        progress=bar,
        media=not args.no_media,
    )
    bar.close()
    n = len(result.records)
    print(f"{result.frames} frames, {n} event{'s' if n != 1 else ''} -> {Path(args.out) / 'events.jsonl'}")
    if result.error is not None:
        _err(f"{result.error} (events up to there were written)")
        return result.error.code
    return EX_OK


def _print_alert(line: str) -> None:
    print(line, flush=True)


def cmd_sim(args) -> int:
    from edge.sim.scenes import build_scene
    from edge.sim.simulate import simulate

    if args.duration is not None and not 1.0 <= args.duration <= 3600:
        _err("--duration must be between 1 and 3600 seconds")
        return EX_USAGE
    if any(v is not None and not 160 <= v <= 8192 for v in (args.width, args.height)):
        _err("--width and --height must be between 160 and 8192 pixels")
        return EX_USAGE
    try:
        scene = build_scene(
            args.scene,
            args.seed,
            randomised=args.randomised,
            width=args.width,
            height=args.height,
            duration_s=args.duration,
        )
    except ValueError as exc:
        _err(str(exc))
        return EX_USAGE
    bar = Progress(f"sim {args.scene}", None if not args.quiet else False)
    truth = simulate(scene, args.out, progress=bar)
    bar.close()
    must = sum(t["must_detect"] for t in truth["throws"])
    print(
        f"{args.out}/scene.mp4: {truth['frames']} frames {scene.width}x{scene.height} at {scene.fps:g} fps, "
        f"{len(truth['throws'])} throws ({must} must be detected); truth.json and config.yaml beside it"
    )
    return EX_OK


def cmd_demo(args) -> int:
    """Simulate a throw among distractors and replay it: the whole job with no camera and no broker."""
    out = Path(args.out)
    sim_dir = out / "sim"
    print(f"1/2 rendering a simulated facade with a throw into {sim_dir} ...")
    rc = cmd_sim(
        argparse.Namespace(
            scene="demo",
            seed=args.seed,
            width=None,
            height=None,
            duration=None,
            randomised=False,
            out=str(sim_dir),
            quiet=args.quiet,
        )
    )
    if rc:
        return rc
    print(f"2/2 replaying it through the detector into {out / 'replay'} ...")
    rc = cmd_replay(
        argparse.Namespace(
            video=str(sim_dir / "scene.mp4"),
            config=str(sim_dir / "config.yaml"),
            camera=None,
            out=str(out / "replay"),
            quiet=args.quiet,
            no_media=False,
        )
    )
    truth = json.loads((sim_dir / "truth.json").read_text())
    floors = [t["origin"]["floor"] for t in truth["throws"]]
    print(f"ground truth: thrown from floor(s) {floors}; clips and stills are in {out / 'replay'}")
    return rc


def cmd_run(args) -> int:
    """The live node: every camera of the config until SIGTERM or Ctrl-C; SIGHUP re-reads the config."""
    import signal

    from edge.node import Node

    cfg = load_config(args.config)
    logs.protect(cfg)  # before anything that logs: its passwords are masked in every line from here
    logs.route_ffmpeg()  # FFmpeg's own messages as log records too: JSON lines, passwords masked
    unknown = [c for c in args.camera or [] if c not in cfg.cameras]
    if unknown:
        _err(f"no camera named {', '.join(unknown)}; the config has {', '.join(cfg.cameras)}")
        return EX_CONFIG
    prepare_storage(cfg)  # StorageError (exit 73) naming storage.dir, before anything is started
    node = Node(cfg, cameras=args.camera, config_path=Path(args.config))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node.request_stop())
    signal.signal(signal.SIGHUP, lambda *_: node.request_reload())  # `systemctl reload edge`
    logging.getLogger().setLevel(logging.INFO)
    logging.info("node %s starting: cameras %s, storage %s", cfg.node.id, ", ".join(node.cameras), cfg.storage.dir)
    if acl := broker_user_problem(cfg):
        logging.warning("%s", acl)
    node.run_forever()
    logging.info("stopping: saving the clips in progress")
    node.stop()
    logging.info("stopped")
    return EX_OK


def cmd_listen(args) -> int:
    """The reference receiver: every node's alerts and files into a folder, one line per alert."""
    import signal
    import threading

    from edge.listen import Listener

    cfg = load_config(args.config)
    listener = Listener(
        cfg, Path(args.out), client_id=args.client_id, on_line=lambda line: print(line, flush=True)
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    listener.start()
    print(
        f"listening on {cfg.mqtt.host}:{cfg.mqtt.port} under {cfg.mqtt.topic_prefix}/#, writing to {args.out}",
        flush=True,
    )
    done.wait()
    listener.stop()
    return EX_OK


EX_VERIFIED, EX_TAMPERED, EX_UNVERIFIED, EX_DATAERR, EX_NOINPUT, EX_CANTCREAT = 0, 1, 3, 65, 66, 73

VERIFY_STATUSES = """exit status:
  0   every event folder is intact and signed by a trusted node key
  1   something changed since signing, a manifest is signed by a key that is not trusted, or an event's
      files have no manifest.json (or are behind a link to a folder, which is not followed)
  3   intact, but UNVERIFIED: no trusted key was given, so anyone could have signed it
  64  a trusted key (--key, --key-file, --key-dir) is not an Ed25519 public key, or --key-dir has no *.pub
  65  a manifest is malformed (not JSON, missing fields, file names outside the event folder)
  66  nothing to check: no such folder, no manifest.json nor an event's files in it, or an unreadable key file
When folders differ, the most serious wins: 1, then 65, then 3."""


def _trusted_keys(args) -> tuple[dict[bytes, str] | None, int]:
    """The trusted node keys from --key, --key-file and --key-dir (raw key -> name), or (None, exit status)."""
    from edge.publish.manifest import parse_public_key

    given: list[tuple[str, str | Path]] = [("--key", k) for k in args.key or []]
    given += [("file", Path(f)) for f in args.key_file or []]
    for d in args.key_dir or []:
        try:
            pubs = sorted(p for p in Path(d).iterdir() if p.suffix == ".pub")
        except OSError as exc:
            _err(f"{d}: cannot read the trusted key folder ({exc.strerror or exc})")
            return None, EX_NOINPUT
        if not pubs:
            _err(f"{d}: no *.pub key file in it, no key to trust")
            return None, EX_USAGE
        given += [("file", p) for p in pubs]
    trusted: dict[bytes, str] = {}
    for kind, source in given:
        if kind == "file":
            try:
                text = Path(source).read_text(errors="replace")
            except OSError as exc:
                _err(f"{source}: cannot read the trusted key ({exc.strerror or exc})")
                return None, EX_NOINPUT
        else:
            text, source = str(source), "--key"
        try:
            trusted.setdefault(parse_public_key(text), str(source))
        except ValueError as exc:
            _err(f"{source}: not a trusted key: {exc}")
            return None, EX_USAGE
    return trusted, EX_OK


def cmd_verify(args) -> int:
    """Check evidence manifests and their files against trusted node keys; name exactly what is wrong."""
    from edge.listen import printable
    from edge.publish.manifest import MANIFEST, Status, check_folder, find_event_folders

    def say(line: str) -> None:
        # Folder and file names come from whoever handed the evidence over: escaped, so that none can hide
        # a line on the terminal (ESC sequences, newlines) or stop the output (a name that is no UTF-8).
        print(printable(line, 16384))

    root = Path(args.dir)
    if not root.exists():
        _err(f"{root}: not found")
        return EX_NOINPUT
    trusted, status = _trusted_keys(args)
    if trusted is None:
        return status
    # Every folder with a manifest is checked; one holding an event's files without a manifest, or a link to an
    # event folder, is a failure: skipping it would report the rest as all there is.
    folders, unchecked = find_event_folders(root) if root.is_dir() else ([], [])
    if not folders and not unchecked:
        _err(f"{root}: no {MANIFEST} found")
        return EX_NOINPUT
    verdicts = sorted([check_folder(f, trusted) for f in folders] + unchecked, key=lambda v: v.folder)
    seen: dict[Status, int] = dict.fromkeys(Status, 0)
    for v in verdicts:
        folder = v.folder
        seen[v.status] += 1
        if v.status is Status.VERIFIED:
            say(f"OK         {folder} (signed by key {v.key_id}: {v.trusted_as})")
        elif v.status is Status.UNVERIFIED:
            say(
                f"UNVERIFIED {folder}: intact, signed by key {v.key_id}, which nothing vouches for "
                "(give the node's key with --key-file or --key-dir)"
            )
        else:
            word = "MALFORMED" if v.status is Status.MALFORMED else "FAILED"
            for p in v.problems:
                say(f"{word} {p}")
        for name in v.unsigned:
            say(f"NOTE       {folder / name}: not covered by the manifest")
    summary = f"{seen[Status.VERIFIED]} of {len(verdicts)} event folders verify"
    extra = [
        f"{seen[Status.UNVERIFIED]} intact but unverified (no trusted key)" if seen[Status.UNVERIFIED] else "",
        f"{seen[Status.FAILED]} failed" if seen[Status.FAILED] else "",
        f"{seen[Status.MALFORMED]} malformed" if seen[Status.MALFORMED] else "",
    ]
    say("; ".join([summary, *filter(None, extra)]))
    if seen[Status.FAILED]:
        return EX_TAMPERED
    if seen[Status.MALFORMED]:
        return EX_DATAERR
    return EX_UNVERIFIED if seen[Status.UNVERIFIED] else EX_VERIFIED


EX_UNAVAILABLE = 69


def cmd_train(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        _err("training needs PyTorch: pip install -e '.[train]' (the node itself never does)")
        return EX_UNAVAILABLE
    from edge.train.verifier import run

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        _err(f"--seeds must be comma-separated integers, got {args.seeds!r}")
        return EX_USAGE
    if args.epochs is not None and args.epochs < 1:
        _err("--epochs must be at least 1")
        return EX_USAGE
    logging.getLogger("edge.train").setLevel(logging.INFO)
    kwargs = {k: v for k, v in (("seeds", seeds), ("epochs", args.epochs)) if v}
    report = run(Path(args.out), Path(args.work), real=not args.no_real, **kwargs)
    print(json.dumps({k: getattr(report, k) for k in ("train_samples", "held_out", "seconds", "sha256")}))
    return EX_OK


def cmd_calibrate(args) -> int:
    from edge.calibrate.command import run

    return run(args)


def cmd_bench(args) -> int:
    from edge.bench import BrokenClip, run_accuracy, run_speed
    from edge.overrides import OverrideError, check_overrides

    if args.set and args.what != "accuracy":
        print(f"edge bench {args.what}: --set changes settings of `edge bench accuracy` only", file=sys.stderr)
        return EX_USAGE
    if args.what == "calibration":
        from edge.calibrate.bench import SUITES, run_bench

        if args.suite is not None and args.suite not in SUITES:  # it would run every suite instead
            print(
                f"edge bench calibration: --suite {args.suite} is not one of its suites (tuning, held_out)",
                file=sys.stderr,
            )
            return EX_USAGE

        return run_bench(args)

    if args.what == "throughput":
        from edge.throughput import run_throughput

        return run_throughput(args)
    if args.what == "speed":
        return run_speed(args)
    try:
        check_overrides(args.set or [])  # before any clip is rendered or replayed
        return run_accuracy(args)
    except OverrideError as e:  # ...or later, when a clip's own settings refuse what the defaults took
        print(f"edge bench: {e}", file=sys.stderr)
        return EX_USAGE
    except BrokenClip as e:  # no report: its numbers would be wrong
        print(f"edge bench: {e}", file=sys.stderr)
        return EX_DATAERR


_LOG_FORMAT_HELP = "stderr lines: json (one object per line), text, or auto (text on a terminal, else json)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge", description="Detect objects thrown from high-rise windows.")
    p.add_argument("--version", action="version", version=f"edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    p.add_argument("--log-format", choices=logs.FORMATS, default="auto", help=_LOG_FORMAT_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("check-config", help="validate a config file (exit 78 on a bad one)")
    s.add_argument("file")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("config-schema", help="print the config's JSON Schema")
    s.set_defaults(func=cmd_config_schema)

    s = sub.add_parser("replay", help="run a video file through the live pipeline")
    s.add_argument("video")
    s.add_argument("--config", required=True)
    s.add_argument("--camera", help="camera whose settings to use (needed when the config has several)")
    s.add_argument(
        "--out", required=True, help="output folder: events.jsonl and events/<id>/ (clips, still, manifest)"
    )
    s.add_argument("--no-media", action="store_true", help="write events only, no clips or stills")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("sim", help="render a simulated clip with ground truth")
    s.add_argument("--scene", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--width", type=int)
    s.add_argument("--height", type=int)
    s.add_argument("--duration", type=float, help="seconds")
    s.add_argument(
        "--randomised",
        action="store_true",
        help="also draw resolution, frame rate, bitrate, noise, tone, blur and lens effects from the seed",
    )
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_sim)

    s = sub.add_parser("demo", help="simulate a throw and replay it (no camera, no broker)")
    s.add_argument("--out", default="demo-out")
    s.add_argument("--seed", type=int, default=3)
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("run", help="the live node: capture, detect, record evidence, report")
    s.add_argument("--config", required=True)
    s.add_argument("--camera", action="append", help="run only this camera (repeatable)")
    s.add_argument("--log-format", choices=logs.FORMATS, default=argparse.SUPPRESS, help=_LOG_FORMAT_HELP)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("listen", help="receive alerts and clips from every node (the community center's side)")
    s.add_argument("--config", required=True, help="a config whose mqtt section says how to reach the broker")
    s.add_argument("--out", default="received", help="folder for received events and files")
    s.add_argument("--client-id", help="MQTT client id (default edge-listen-<node id>)")
    s.set_defaults(func=cmd_listen)

    s = sub.add_parser(
        "verify",
        help="check evidence manifests: signer, signature and every file's SHA-256",
        description=(
            "Check every manifest.json under DIR: that it is well formed and names only files of its own "
            "folder, that its signature holds, that the key that signed it is a trusted node key, and every "
            "file's size and SHA-256. Without a trusted key the result is at best UNVERIFIED (exit 3)."
        ),
        epilog=VERIFY_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("dir", help="an event folder, or a folder holding many")
    s.add_argument("--key", action="append", help="a node's public key (base64) to trust (repeatable)")
    s.add_argument(
        "--key-file",
        action="append",
        help="a file holding one (storage/keys/node_ed25519.pub on the node; base64 or PEM; repeatable)",
    )
    s.add_argument(
        "--key-dir",
        action="append",
        metavar="DIR",
        help="a folder of trusted node keys, one *.pub per node, registered out of band (repeatable)",
    )
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("train", help="train a learned model (needs the optional 'train' extra)")
    s.add_argument("what", choices=["verifier"])
    s.add_argument("--out", default="models/fall-verifier", help="folder for model.onnx, its SHA-256 and report")
    s.add_argument("--work", default=".train-cache", help="folder for rendered clips and candidates (reused)")
    s.add_argument("--seeds", help="comma-separated seeds of the rendered training clips (default: 3001)")
    s.add_argument("--epochs", type=int, help="passes over the training set (default: the trainer's EPOCHS)")
    s.add_argument("--no-real", action="store_true", help="train on simulated clips only")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "calibrate",
        help="facade calibration: a proposal from a still, corrected on a local web page, saved to the config",
    )
    s.add_argument("--auto", metavar="IMAGE", help="no page: propose from this image, print it, write --out")
    s.add_argument("--floor-height", type=float, default=3.0, help="storey height in metres (default 3.0)")
    s.add_argument(
        "--lowest-floor",
        type=int,
        default=1,
        help="the floor whose bottom is the lowest line proposed (default 1)",
    )
    s.add_argument("--bay-width", type=float, help="window bay width in metres, when known")
    s.add_argument(
        "--out", help="--auto: write the facade snippet here, a new file or an earlier snippet (default: print it)"
    )
    s.add_argument("--config", help="the page: the config to calibrate a camera of")
    s.add_argument("--camera", help="the page: the camera to calibrate")
    s.add_argument("--still", help="the page: calibrate on this image or video file, not the camera's picture")
    s.add_argument("--listen", default="127.0.0.1:8090", help="the page's address (default 127.0.0.1:8090)")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("bench", help="measure the detector")
    s.add_argument("what", choices=["accuracy", "speed", "throughput", "calibration"])
    s.add_argument("--cache", default=".bench-cache", help="folder for rendered scenes (reused)")
    s.add_argument("--scenes", help="comma-separated subset of the suite")
    s.add_argument("--markdown", help="also write the table to this file")
    s.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="accuracy: change a camera setting for the run, e.g. fall.min_fall_floors=1.5 or "
        "fall.verifier.veto_below=0.2; the value is read and bounded as in the config file (repeatable)",
    )
    s.add_argument("--uncalibrated", action="store_true", help="replay without the facade calibration")
    s.add_argument(
        "--suite",
        choices=["tuning", "tuning_more", "held_out", "classic"],
        help="only this suite (default: the randomised tuning and held-out; tuning_more: more tuning seeds; "
        "calibration: tuning or held_out)",
    )
    s.add_argument("--seeds", help="calibration: only these seeds, FIRST-LAST (development stills)")
    s.add_argument("--no-real", action="store_true", help="skip the real-footage section")
    s.add_argument("--no-plot", action="store_true", help="do not write the detection-limit PNG")
    s.add_argument(
        "--no-ablation", action="store_true", help="skip the verifier ablation (physics alone vs with the model)"
    )
    s.add_argument("--cameras", type=int, default=4, help="throughput: live cameras to run at once")
    s.add_argument(
        "--live-seconds", type=float, default=300.0, help="throughput: length of the live run (0: skip it)"
    )
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_format, logging.DEBUG if args.verbose else logging.WARNING)
    handlers: dict[type, Callable[[Exception], int]] = {
        ConfigError: lambda e: (_err(str(e)), EX_CONFIG)[1],
        VideoError: lambda e: (_err(str(e)), e.code)[1],
        StorageError: lambda e: (_err(str(e)), EX_CANTCREAT)[1],
    }
    try:
        return args.func(args)
    except tuple(handlers) as exc:
        return handlers[type(exc)](exc)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        _err(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 74


if __name__ == "__main__":
    sys.exit(main())
