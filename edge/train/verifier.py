"""`edge train verifier`: regenerate the verifier's dataset (seeded) and train its small network.

PyTorch is imported here only, and comes with the optional `train` extra: the node runs the exported ONNX
model with ONNX Runtime and never needs it. The network is a plain 5-layer CNN written here rather than an
Ultralytics `-cls` model: its input is a stack of 8 contrast crops, not an RGB image, Ultralytics needs
torchvision (only a 5.5 GB CUDA build of it installs beside the CPU PyTorch this machine has), and at
~70k weights there is nothing a pretrained backbone or its trainer's augmentations would add.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.bench import DISTRACTOR_S, DISTRACTOR_SCENES, RENDER_VERSION, SUITES, THROW_SCENES, worker_pool
from edge.detect.sample import SAMPLE_FRAMES, SAMPLE_PX
from edge.train.dataset import Candidates, Label, real_clip, simulated_clip

log = logging.getLogger(__name__)

# Seeds of more rendered training clips, beside the bench's tuning suite (101, 102, 151-154): apart from its
# held-out seeds (901, 902, 951-954), so that the bench's held-out numbers stay held out for the model too.
TRAIN_SEEDS = (3001,)
EPOCHS = 12
BATCH = 128
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
SEED = 7
WORKERS = 2  # this machine's cores, for rendering and cutting candidates


@dataclass
class TrainReport:
    """What a training run made and measured: the numbers of the model card."""

    train_clips: list[str]
    held_out_clips: list[str]
    train_samples: dict[str, int]
    held_out_samples: dict[str, int]
    epochs: int
    seconds: dict[str, float]
    train: dict[str, float]
    held_out: dict[str, float]
    held_out_real: dict[str, float]  # the held-out real clips: all samples, too few pass the gate
    software: dict[str, str]
    sha256: str = ""
    weights: int = 0
    history: list[dict] = field(default_factory=list)


def _render(job: tuple[str, int, float | None, Path]) -> Path:
    from edge.sim.scenes import build_scene
    from edge.sim.simulate import simulate

    name, seed, duration, folder = job
    if not (folder / "truth.json").exists():
        simulate(build_scene(name, seed, randomised=True, duration_s=duration), folder)
    return folder


def _candidates(job: tuple[str, Path, Path, dict | None]) -> Path:
    """Cut (or reuse) one clip's candidates: job = (name, clip folder or video, cache file, real entry)."""
    name, source, cache, entry = job
    if not cache.exists():
        if entry is None:
            found = simulated_clip(source)
        else:
            found = real_clip(entry, source, calibrated=name.endswith("-cal"), work=cache.parent / "real")
        found.save(cache)
    return cache


def training_clips(seeds: tuple[int, ...]) -> list[tuple[str, int, float | None]]:
    """Every scene of the bench's randomised suite, throws and distractors alike, once per seed."""
    scenes = [(n, None) for n in THROW_SCENES] + [(n, DISTRACTOR_S) for n in DISTRACTOR_SCENES]
    return [(name, seed, duration) for seed in seeds for name, duration in scenes]


def suite_clips(split: str) -> list[tuple[str, int, float | None]]:
    """A suite of the accuracy bench: `tuning` is trained on, as the physics rules were tuned on it;
    `held_out` is only ever measured."""
    return [(name, seed, duration) for name, seed, duration, _ in SUITES[split]]


def real_jobs(cache: Path, split: str) -> list[tuple[str, Path, Path, dict]]:
    """One split of the real-footage manifest, with and without its calibration."""
    from edge.realbench import footage_dir, load_manifest

    try:
        folder = footage_dir()
    except FileNotFoundError as exc:
        log.warning("%s: going on without real footage", exc)
        return []
    jobs = []
    for entry in load_manifest():
        if entry["split"] != split:
            continue
        for mode in ("cal", "uncal"):
            name = f"real-{Path(entry['file']).stem}-{mode}"
            jobs.append((name, folder / entry["file"], cache / f"{name}.npz", entry))
    return jobs


def build_dataset(work: Path, scenes: list[tuple[str, int, float | None]], real: str | None) -> list[Path]:
    """Render `scenes` (cached in work/clips) and cut their candidates (cached in work/candidates), and those
    of the real clips of split `real` (None: no real clips)."""
    clips, cache = work / "clips", work / "candidates"
    clips.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    renders = [(n, s, d, clips / f"{n}-{s}-r{RENDER_VERSION}") for n, s, d in scenes]
    with worker_pool(WORKERS) as pool:
        folders = list(pool.map(_render, renders))
        jobs = [(f.name, f, cache / f"{f.name}.npz", None) for f in folders]
        if real is not None:
            jobs += real_jobs(cache, real)
        return list(pool.map(_candidates, jobs))


def load(paths: list[Path]) -> Candidates:
    """All candidates of `paths` in one set (track ids made unique per clip)."""
    parts = [Candidates.load(p) for p in paths]
    parts = [c for c in parts if len(c.labels)]
    if not parts:
        return Candidates.empty("none")
    offset, tracks = 0, []
    for c in parts:
        tracks.append(c.tracks.astype(np.int64) + offset)
        offset += int(c.tracks.max()) + 1
    return Candidates(
        np.concatenate([c.samples for c in parts]),
        np.concatenate([c.labels for c in parts]),
        np.concatenate(tracks),
        np.concatenate([c.gated for c in parts]),
        "+".join(c.clip for c in parts),
    )


def _counts(c: Candidates) -> dict[str, int]:
    return {
        "fall": int(np.sum(c.labels == Label.FALL)),
        "other": int(np.sum(c.labels == Label.OTHER)),
        "other_gated": int(np.sum((c.labels == Label.OTHER) & c.gated)),
        "fall_gated": int(np.sum((c.labels == Label.FALL) & c.gated)),
    }


def network():
    """The verifier: five 3x3 convolutions over the stacked crops, global pooling, one probability."""
    import torch.nn as nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(SAMPLE_FRAMES, 16, 1),
        *block(16, 32, 2),  # 24 x 24
        *block(32, 32, 1),
        *block(32, 64, 2),  # 12 x 12
        *block(64, 64, 2),  # 6 x 6
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )


GATED_WEIGHT = 3.0  # a gated candidate is what the verifier will judge live: it counts this much more


def _weights(c: Candidates) -> np.ndarray:
    """Per-sample loss weights: both classes weigh the same in all, gated candidates more within each."""
    w = np.where(c.gated, GATED_WEIGHT, 1.0)
    for label in (Label.FALL, Label.OTHER):
        mask = c.labels == label
        if mask.any():
            w[mask] *= 0.5 * len(w) / w[mask].sum()
    return w.astype(np.float32)


def _augment(x, rng: np.random.Generator):
    """Mirror left-right and swap bright for dark at random: a fall looks the same either way round."""
    import torch

    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    sign = torch.from_numpy(np.where(rng.random(len(x)) < 0.5, -1.0, 1.0).astype(np.float32))
    return x * sign[:, None, None, None]


def train(train_set: Candidates, epochs: int = EPOCHS, seed: int = SEED, threads: int = WORKERS):
    """Train the network on `train_set` (FALL against OTHER); returns the model in eval mode and the history."""
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    model = network()
    x_all = torch.from_numpy(train_set.samples.astype(np.float32))
    y_all = torch.from_numpy((train_set.labels == Label.FALL).astype(np.float32))
    w_all = torch.from_numpy(_weights(train_set))
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps = epochs * -(-len(y_all) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=steps)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(y_all)))
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            x = _augment(x_all[idx], rng)
            loss = (loss_fn(model(x).squeeze(1), y_all[idx]) * w_all[idx]).sum() / w_all[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": round(total / len(order), 4)})
        log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, total / len(order))
    return model.eval(), history


def export(model, path: Path) -> None:
    """Write the model as ONNX with the node's input and output names, the sigmoid included."""
    import warnings

    import torch

    from edge.verifier import INPUT_NAME, OUTPUT_NAME

    wrapped = torch.nn.Sequential(model, torch.nn.Sigmoid()).eval()
    example = torch.zeros(1, SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )


def scores(model_path: Path, c: Candidates, batch: int = 512) -> np.ndarray:
    """The exported model's probabilities for every sample of `c`, through ONNX Runtime as the node runs it."""
    from edge.verifier import OnnxVerifier

    model = OnnxVerifier(model_path)
    out = [model.score_batch(c.samples[i : i + batch]) for i in range(0, len(c.labels), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate(p: np.ndarray, c: Candidates, veto_below: float, confirm_above: float) -> dict[str, float]:
    """Shares at the config's thresholds, on the gated candidates (what the verifier judges live)."""
    fall = (c.labels == Label.FALL) & c.gated
    other = (c.labels == Label.OTHER) & c.gated
    return {
        "auc_gated": round(_auc(p[fall], p[other]), 4),
        "auc_all": round(_auc(p[c.labels == Label.FALL], p[c.labels == Label.OTHER]), 4),
        "fall_vetoed": _share(fall, p < veto_below),
        "fall_confirmed": _share(fall, p >= confirm_above),
        "other_vetoed": _share(other, p < veto_below),
        "other_confirmed": _share(other, p >= confirm_above),
    }


def _share(mask: np.ndarray, hit: np.ndarray) -> float:
    """The share of the samples in `mask` that `hit`, to 4 places; NaN when there are none."""
    return round(float(np.mean(hit[mask])), 4) if mask.any() else float("nan")


def _evaluate_real(model_path: Path, paths: list[Path], cfg) -> dict[str, float]:
    """Shares at the thresholds over every sample of the held-out real clips (hardly any pass the gate)."""
    if not paths:
        return {}
    c = load(paths)
    p = scores(model_path, c)
    fall, other = c.labels == Label.FALL, c.labels == Label.OTHER
    return {
        "fall_samples": int(fall.sum()),
        "other_samples": int(other.sum()),
        "fall_vetoed": _share(fall, p < cfg.veto_below),
        "other_vetoed": _share(other, p < cfg.veto_below),
        "fall_confirmed": _share(fall, p >= cfg.confirm_above),
    }


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random fall scores above a random other sample (ties count half)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def software() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }


def run(
    out: Path, work: Path, seeds: tuple[int, ...] = TRAIN_SEEDS, epochs: int = EPOCHS, real: bool = True
) -> TrainReport:
    """Regenerate the dataset, train, export `out/model.onnx` with its SHA-256 and `out/report.json`."""
    from edge.config import VerifierConfig

    t0 = time.monotonic()
    train_paths = build_dataset(work, suite_clips("tuning") + training_clips(seeds), "tuning" if real else None)
    test_paths = build_dataset(work, suite_clips("held_out"), None)
    real_test_paths = build_dataset(work, [], "held_out") if real else []
    t1 = time.monotonic()
    train_set, test_set = load(train_paths), load(test_paths)
    model, history = train(train_set, epochs)
    t2 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.onnx"
    export(model, model_path)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    (out / "model.onnx.sha256").write_text(f"{digest}  model.onnx\n")
    cfg = VerifierConfig()
    report = TrainReport(
        train_clips=[p.stem for p in train_paths],
        held_out_clips=[p.stem for p in test_paths],
        train_samples=_counts(train_set),
        held_out_samples=_counts(test_set),
        epochs=epochs,
        seconds={"dataset": round(t1 - t0, 1), "training": round(t2 - t1, 1)},
        train=evaluate(scores(model_path, train_set), train_set, cfg.veto_below, cfg.confirm_above),
        held_out=evaluate(scores(model_path, test_set), test_set, cfg.veto_below, cfg.confirm_above),
        held_out_real=_evaluate_real(model_path, real_test_paths, cfg),
        software=software(),
        sha256=digest,
        weights=sum(p.numel() for p in model.parameters()),
        history=history,
    )
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
