"""`edge calibrate`: the proposal without a browser (--auto), or the local calibration page."""

from __future__ import annotations

import sys
from pathlib import Path

from edge.calibrate.propose import NotAFacade, detect_grid
from edge.calibrate.rules import Refused, check_facade, reprojection_errors
from edge.calibrate.still import StillError, read_image
from edge.calibrate.yamlio import updated_text

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_CANTCREAT = 0, 64, 65, 66, 69, 73
SNIPPET_HEAD = "# Proposed by `edge calibrate --auto "  # the first line of every snippet --out writes


def _err(msg: str) -> None:
    print(f"edge calibrate: error: {msg}", file=sys.stderr)


def run(args) -> int:
    """Dispatch on the arguments: --auto IMAGE, or --config FILE --camera NAME for the page."""
    if args.auto:
        return run_auto(args)
    if not args.config:
        _err("give --auto IMAGE, or --config FILE --camera NAME for the calibration page")
        return EX_USAGE
    from edge.calibrate.web import serve

    return serve(args)


def _check_answers(args) -> str | None:
    if not 1.5 < args.floor_height <= 10.0:
        return f"--floor-height {args.floor_height}: a storey is more than 1.5 and at most 10 metres"
    if not -5 <= args.lowest_floor <= 200:
        return f"--lowest-floor {args.lowest_floor}: a floor number from -5 to 200"
    if args.bay_width is not None and not 1.0 <= args.bay_width <= 20.0:
        return f"--bay-width {args.bay_width}: a window bay is 1 to 20 metres wide"
    return None


def run_auto(args) -> int:
    """Propose a calibration for one still, print it and write the facade snippet."""
    problem = _check_answers(args)
    if problem:
        _err(problem)
        return EX_USAGE
    problem = _not_ours(Path(args.out)) if args.out else None
    if problem:
        _err(problem)
        return EX_CANTCREAT
    try:
        image = read_image(Path(args.auto))
    except StillError as exc:
        _err(str(exc))
        return EX_NOINPUT
    try:
        grid = detect_grid(image)
    except NotAFacade as exc:
        _err(f"{args.auto}: {exc}")
        return EX_DATAERR
    prop = grid.calibration(args.floor_height, args.lowest_floor, args.bay_width)
    block = prop.facade_block()
    try:
        cfg = check_facade(block)
    except Refused as exc:
        _err(f"{args.auto}: the proposal does not pass check-config's rules: {exc}")
        return EX_DATAERR
    errors = reprojection_errors(cfg)
    w, h = prop.image_size
    lines = prop.floor_lines
    print(
        f"{args.auto}: {w}x{h}, {len(lines)} floor lines (floors {lines[0].floor} to {lines[-1].floor}), "
        f"storey repeat {grid.strength:.2f} (1 = perfect), "
        f"{'focal length from the view' if grid.focal_known else 'focal length assumed: metres along are rough'}"
    )
    for line in lines:
        (x0, y0), (x1, y1) = line.ends
        print(f"  floor {line.floor:>3}: ({x0:7.1f}, {y0:7.1f}) -> ({x1:7.1f}, {y1:7.1f})")
    if prop.top_floor is not None:
        print(f"  roof above floor {prop.top_floor} (top_floor: the storeys end against the sky there)")
    else:
        print("  roof not seen (top_floor not set: mark it on the page if the roof is in view)")
    for (img, fac), err in zip(prop.points, errors, strict=True):
        print(f"  point image {list(img)} facade {list(fac)} reprojection {err:.2f} px")
    text = snippet(args, grid, block)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: put its facade: block under the camera, then check the floor lines on the page")
    else:
        print(text, end="")
    return EX_OK


def _not_ours(out: Path) -> str | None:
    """Why --out must not be written: a file there that is not a snippet of ours (the config itself, mistaken
    for where the calibration is saved, was replaced whole by the snippet); None when it may be."""
    if not out.exists() and not out.is_symlink():
        return None
    if out.exists() and not out.is_file():  # /dev/stdout, a pipe: a stream, nothing kept there to lose
        return None if not out.is_dir() else f"--out {out}: is a folder, not a file"
    try:
        with out.open("rb") as f:
            head = f.read(len(SNIPPET_HEAD))
    except OSError as exc:
        return f"--out {out}: cannot write there ({exc.strerror or exc})"
    if not out.is_symlink() and head in (b"", SNIPPET_HEAD.encode()):  # empty (mktemp), or a snippet of ours
        return None
    return (
        f"{out}: exists and is not a snippet of `edge calibrate --auto`: not overwritten (--out writes only the "
        "facade: block to paste; `edge calibrate --config FILE --camera NAME` saves into a config)"
    )


def snippet(args, grid, block: dict) -> str:
    head = (
        f"{SNIPPET_HEAD}{Path(args.auto).name} --floor-height {args.floor_height:g} "
        f"--lowest-floor {args.lowest_floor}`: the lowest floor line drawn is the bottom of floor "
        f"{args.lowest_floor}.\n"
        "# Indented to paste under a camera of the config. Check the floor lines on the calibration page\n"
        "# (`edge calibrate --config FILE --camera NAME`) before relying on it.\n"
    )
    if not grid.focal_known and args.bay_width is None:
        head += "# Metres along the facade are rough (focal length assumed); floors do not depend on them.\n"
    wrapped = updated_text("cameras:\n  camera:\n    source: x\n", "camera", block, None)
    return head + wrapped.split("source: x\n", 1)[1]
