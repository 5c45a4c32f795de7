"""The fall verifier's ONNX model: checked when the config is, loaded once per process, scored on one core."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from edge.detect.sample import SAMPLE_FRAMES, SAMPLE_PX

INPUT_NAME = "crops"  # (batch, SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX) float32, edge.detect.sample's samples
OUTPUT_NAME = "fall"  # (batch, 1) float32: the probability that the track is a falling object
MAX_MODEL_BYTES = 50_000_000  # far above any model this node should run; a bigger file is a mistake
# One thread per session: a node runs one detector per camera on two cores, and the model is scored a
# few times a minute, so parallelism inside one run only competes with the other cameras.
_THREADS = 1


class ModelError(Exception):
    """Why a model file cannot be the verifier."""


class OnnxVerifier:
    """A loaded verifier model; `score` is safe to call from several camera threads at once."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        self.path = path
        data = _read(path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        options = ort.SessionOptions()
        options.intra_op_num_threads = _THREADS
        options.inter_op_num_threads = _THREADS
        options.log_severity_level = 3  # errors only: the node's log is for people
        try:
            self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a corrupt file
            raise ModelError(
                f"not a model ONNX Runtime can load ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        _check_signature(self._session)

    def score(self, sample: np.ndarray) -> float:
        """The probability that one sample (SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX) shows a falling object."""
        return float(self.score_batch(sample[None])[0])

    def score_batch(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of samples (n, SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX), as float32 (n,)."""
        batch = np.ascontiguousarray(samples, dtype=np.float32)
        (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return out.reshape(-1)


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{size} bytes is too large for the verifier (over {MAX_MODEL_BYTES})")
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read it ({exc.strerror or exc})") from None


def _check_signature(session) -> None:
    """The model takes one (batch, frames, px, px) float input and gives one probability per sample."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs]
    if names != [INPUT_NAME]:
        raise ModelError(f"expects inputs {names}, the node gives one called {INPUT_NAME!r}")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or shape[1:] != [SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX] or inputs[0].type != "tensor(float)":
        raise ModelError(
            f"expects {inputs[0].type} of shape {shape}, the node gives float of shape "
            f"[batch, {SAMPLE_FRAMES}, {SAMPLE_PX}, {SAMPLE_PX}]"
        )
    if OUTPUT_NAME not in [o.name for o in outputs]:
        raise ModelError(f"has no output called {OUTPUT_NAME!r}")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


_loaded: dict[tuple[Path, int, int], OnnxVerifier] = {}
_lock = threading.Lock()


def load_verifier(path: Path) -> OnnxVerifier:
    """The model at `path`, loaded once per process and file version (cameras share one session)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelError(f"cannot read it ({exc.strerror or exc})") from None
    key = (path, st.st_mtime_ns, st.st_size)
    with _lock:
        if key not in _loaded:
            _loaded[key] = OnnxVerifier(path)
        return _loaded[key]


def check_model(path: Path) -> None:
    """Raise ModelError unless `path` loads and takes the node's samples, and scores one as a probability."""
    verifier = load_verifier(path)
    p = verifier.score(np.zeros((SAMPLE_FRAMES, SAMPLE_PX, SAMPLE_PX), np.float32))
    if not 0.0 <= p <= 1.0:
        raise ModelError(f"gives {p} for an empty sample, not a probability in [0, 1]")
