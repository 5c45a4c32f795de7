"""The node's YAML configuration: strict pydantic models, loading with line-accurate errors.

Every tuned number of the pipeline is a field here, with a default, bounds and a one-line description,
so that `edge config-schema` doubles as the reference an installer reads.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from edge.geometry import FacadeMap

EX_CONFIG = 78


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .nan and .inf are never a setting


Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Point01 = tuple[Unit, Unit]


class Polygon(Strict):
    """A polygon in 0..1 frame coordinates, so it survives a change of resolution."""

    points: list[Point01] = Field(min_length=3, description="Vertices [x, y], 0..1 of frame width/height.")

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_list(cls, value: Any) -> Any:
        return {"points": value} if isinstance(value, list) else value


_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")


def split_listen(value: str) -> tuple[str, int]:
    """(host, port) of a `host:port` or `[v6]:port` address; ValueError for anything else."""
    m = _LISTEN.fullmatch(value)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise ValueError("expected host:port (e.g. 127.0.0.1:9108 or [::1]:9108)")
    return m["host"].strip("[]"), int(m["port"])


class MetricsConfig(Strict):
    """The node's HTTP endpoint for monitoring: GET /metrics (Prometheus text) and GET /healthz."""

    listen: str | None = Field(
        "127.0.0.1:9108",
        description="host:port serving /metrics and /healthz; null turns both off. Loopback unless a scraper "
        "elsewhere needs it (nothing there is secret, but nothing there is for strangers either).",
    )
    outbox_stall_s: float = Field(
        120.0,
        ge=5.0,
        le=86400.0,
        description="/healthz: messages waiting with no broker acknowledgement for this long mean the outbox "
        "is not draining.",
    )

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value


class NodeConfig(Strict):
    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Name of this node; part of every MQTT topic and event id.",
    )
    status_interval_s: float = Field(
        10.0, ge=1.0, le=3600.0, description="How often camera status and node health are refreshed."
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    worker_stall_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="Watchdog: a camera worker not back in its loop for this long is stuck; systemd watchdog "
        "pings stop, and systemd restarts the node.",
    )


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # a source naming its protocol: rtsp://, file:, pipe:
CONFIG_DIR = "config_dir"  # validation context: the folder of the config file being read, when there is one


def beside_config(path: Path, info: ValidationInfo) -> Path:
    """A relative path names a file beside the config file, not in the working directory (a service's is /)."""
    base = (info.context or {}).get(CONFIG_DIR)
    return path if base is None or path.is_absolute() else Path(base) / path


# A file or folder the config names: relative to the config file's folder (`beside_config`).
ConfigPath = Annotated[Path, AfterValidator(beside_config)]


def _check_reconnect_order(first_s: float, longest_s: float) -> None:
    """A backoff whose first wait exceeds its longest is a swapped pair: refused, not silently clamped."""
    if first_s > longest_s:
        raise ValueError(f"reconnect_min_s ({first_s}) exceeds reconnect_max_s ({longest_s})")


def readable_file(path: Path | None) -> Path | None:
    """A file the node will read at start (TLS, password): checked when the config is, with its path."""
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return path


class StorageConfig(Strict):
    dir: ConfigPath = Field(
        Path("/var/lib/edge"), description="Where clips, stills, manifests and the outbox live."
    )
    quota_gb: float | None = Field(
        None,
        gt=0.0,
        le=1e6,
        description="Most that storage.dir may hold; null: bounded only by the disk (keeping free_min_gb free).",
    )
    free_min_gb: float = Field(
        1.0, ge=0.0, le=1e4, description="Free space always left on the disk, quota or not (the OS needs it)."
    )
    evidence_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Evidence is kept at least this long, and deleted after it (30: the usual minimum for "
        "residential security footage in China).",
    )
    warn_share: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="A storage warning is raised when what may not be deleted yet fills this share of the space.",
    )
    retention_interval_s: float = Field(
        60.0, ge=1.0, le=86400.0, description="How often space is measured and old files deleted."
    )

    @field_validator("dir")
    @classmethod
    def _can_be_a_directory(cls, path: Path) -> Path:
        # A file in the way stops every user; whether this user may write there is storage_problem()'s job.
        for p in (path, *path.parents):
            if p.exists() or p.is_symlink():
                if not p.is_dir():
                    raise ValueError(f"{p} is not a directory")
                break
        return path


class TlsConfig(Strict):
    ca_file: ConfigPath = Field(description="CA certificate that signed the broker's certificate.")
    cert_file: ConfigPath | None = Field(
        None, description="This client's certificate, when the broker asks for one."
    )
    key_file: ConfigPath | None = Field(None, description="Private key of cert_file.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return readable_file(path)

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Strict):
    enabled: bool = Field(True, description="Publish alerts, status and clips to the broker (edge run).")
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    topic_prefix: str = Field(
        "edge", pattern=r"^[^#+/]+$", description="First topic level; topics are <prefix>/<node>/..."
    )
    client_id: str | None = Field(None, description="MQTT client id; the node id when not given.")
    username: str | None = Field(None, description="Broker user; by the shipped ACL, the node id.")
    password: SecretStr | None = Field(None, description="Broker password; write ${ENV_NAME}, never the value.")
    password_file: ConfigPath | None = Field(
        None, description="File holding the password (a systemd credential: ${CREDENTIALS_DIRECTORY}/mqtt)."
    )
    tls: TlsConfig | None = Field(None, description="TLS to the broker; strongly advised off the LAN.")
    keepalive_s: int = Field(30, ge=5, le=600, description="The broker declares the node dead after 1.5x this.")
    reconnect_min_s: float = Field(
        0.5, gt=0.0, le=60.0, description="First retry after losing the broker (then doubling, with jitter)."
    )
    reconnect_max_s: float = Field(
        3.0,
        gt=0.0,
        le=3600.0,
        description="Longest wait between reconnect attempts: an alert waits for the reconnect, so a few seconds.",
    )
    max_inflight: int = Field(20, ge=1, le=1000, description="QoS 1 messages sent but not yet acknowledged.")
    drain_rate_per_s: float = Field(
        50.0, gt=0.0, le=10000.0, description="Messages per second when sending a backlog (alerts jump it)."
    )
    chunk_kib: int = Field(256, ge=16, le=8192, description="Size of the pieces clips are sent in.")
    trajectory_points: int = Field(
        100, ge=2, le=1000, description="Trajectory points in an event payload (keeps it under 8 KiB)."
    )
    outbox_max_mb: float = Field(
        512.0, gt=0.0, le=100000.0, description="Outbox size; beyond, clip chunks are dropped first, alerts never."
    )

    @field_validator("password_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return readable_file(path)

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    @model_validator(mode="after")
    def _reconnect_order(self) -> MqttConfig:
        _check_reconnect_order(self.reconnect_min_s, self.reconnect_max_s)
        return self

    def secret(self) -> str | None:
        """The password, read from password_file when that is how it is given."""
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password.get_secret_value() if self.password else None


class RecordConfig(Strict):
    pre_s: float = Field(4.0, ge=0.0, le=30.0, description="Seconds of video kept before the object appears.")
    post_s: float = Field(2.0, ge=0.0, le=30.0, description="Seconds of video kept after the object is gone.")
    buffer_s: float = Field(
        30.0,
        ge=5.0,
        le=600.0,
        description="Compressed video held in memory; must exceed pre_s plus the longest fall in view.",
    )

    @model_validator(mode="after")
    def _buffer_holds_pre_roll(self) -> RecordConfig:
        if self.buffer_s < self.pre_s + 5:
            raise ValueError(f"buffer_s ({self.buffer_s}) must be at least pre_s + 5 s to hold a whole fall")
        return self


class CaptureConfig(Strict):
    """How a live source is read and watched."""

    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport; TCP survives lossy links.")
    open_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="Give up connecting after this long.")
    stall_s: float = Field(
        5.0, gt=0.0, le=600.0, description="Watchdog: no frame for this long restarts the stream."
    )
    max_pts_jump_s: float = Field(
        5.0, gt=0.0, le=3600.0, description="Timestamps jumping more than this (either way) restart the stream."
    )
    reconnect_min_s: float = Field(
        0.5, gt=0.0, le=60.0, description="First retry after a failure (then doubling, with jitter)."
    )
    reconnect_max_s: float = Field(30.0, gt=0.0, le=3600.0, description="Longest wait between retries.")
    queue_frames: int = Field(
        75,
        ge=1,
        le=10000,
        description="Frames waiting for detection (3 s at 25 fps); beyond, dropped and counted.",
    )
    realtime_files: bool = Field(True, description="Pace a file source at its frame rate, like a camera.")
    probe_s: float = Field(
        1.0,
        ge=0.1,
        le=10.0,
        description="Stream read before the first frame; FFmpeg's 5 s default delays it and bursts frames.",
    )

    @model_validator(mode="after")
    def _reconnect_order(self) -> CaptureConfig:
        _check_reconnect_order(self.reconnect_min_s, self.reconnect_max_s)
        return self


class FacadePoint(Strict):
    image: tuple[float, float] = Field(description="Pixel [x, y] in the camera's full-resolution image.")
    facade: tuple[float, float] = Field(description="[metres along the facade, metres above ground].")


class FacadeConfig(Strict):
    """Maps image pixels to metres on the facade plane; gives fall distances in metres and the origin floor."""

    floor_height_m: float = Field(3.0, gt=1.5, le=10.0, description="Storey height in metres.")
    ground_floor: int = Field(1, ge=-5, le=200, description="Number of the floor whose bottom is at 0 m.")
    points: list[FacadePoint] = Field(description="4 or more image <-> facade correspondences.")
    image_size: tuple[Annotated[int, Field(ge=16, le=16384)], Annotated[int, Field(ge=16, le=16384)]] | None = (
        Field(
            None,
            description=(
                "[width, height] of the images the points were measured on; the calibration is scaled to the size "
                "the camera sends. Unset: the size of the first frame the camera sends."
            ),
        )
    )
    top_floor: int | None = Field(
        None, ge=1, le=300, description="Highest floor with windows: falls starting above its roof are ignored."
    )
    extent_m: tuple[float, float] | None = Field(
        None,
        description="[from, to] metres along the facade where windows are: falls starting outside are ignored.",
    )
    outside_margin_m: float = Field(
        2.0, ge=0.0, le=50.0, description="Slack around top_floor and extent_m for an origin measured imprecisely."
    )

    @field_validator("points")
    @classmethod
    def _four_or_more(cls, points: list[FacadePoint]) -> list[FacadePoint]:
        if len(points) < 4:
            raise ValueError(f"a facade calibration needs at least 4 points, got {len(points)}")
        return points

    @model_validator(mode="after")
    def _bounds_in_order(self) -> FacadeConfig:
        # Both bound where a fall may start; out of order they exclude the whole facade and every fall is
        # ignored without a word, so they are refused here.
        if self.extent_m is not None and not self.extent_m[0] < self.extent_m[1]:
            a, b = self.extent_m
            raise ValueError(
                f"extent_m [{a}, {b}]: from must be less than to (metres along the facade from the same edge as "
                "the points), or every fall starts outside it"
            )
        if self.top_floor is not None and self.top_floor < self.ground_floor:
            raise ValueError(
                f"top_floor ({self.top_floor}) is below ground_floor ({self.ground_floor}): the roof would be at "
                "or below 0 m and every fall would start above it"
            )
        return self

    def points_outside_image(self) -> list[int]:
        """Indices of the points outside `image_size`: right for points projected from a survey, wrong for points
        measured on a larger image (the calibration is then scaled by the wrong ratio and every floor moves)."""
        if self.image_size is None:
            return []
        w, h = self.image_size
        return [i for i, p in enumerate(self.points) if not (0 <= p.image[0] <= w and 0 <= p.image[1] <= h)]

    @model_validator(mode="after")
    def _not_degenerate(self) -> FacadeConfig:
        self.facade_map()  # raises ValueError when the points give no homography
        return self

    def facade_map(self) -> FacadeMap:
        """The homography fitted to the points as given (in the pixels they were measured in)."""
        from edge.geometry import FacadeMap  # local: keeps config importable without cv2 at schema time

        return FacadeMap.from_points(
            [p.image for p in self.points], [p.facade for p in self.points], self.floor_height_m, self.ground_floor
        )


class MasksConfig(Strict):
    shield: list[Polygon] = Field(
        default_factory=list, description="Never alert from motion inside these (trees, a flag, a road)."
    )
    privacy: list[Polygon] = Field(
        default_factory=list, description="Blurred in annotated clips and stills, never in the original."
    )


class MotionConfig(Strict):
    """The background-subtraction prefilter on the luma plane."""

    max_work_width: int = Field(
        1920,
        ge=320,
        le=8192,
        description="Wider frames are area-downscaled to this width (1080p stays full).",
    )
    background_alpha: float = Field(
        0.04, gt=0.0, le=0.5, description="Learning rate of the running background, per frame."
    )
    noise_alpha: float = Field(
        0.02, gt=0.0, le=0.5, description="Learning rate of the per-pixel noise level, per frame."
    )
    noise_k: float = Field(
        4.0, ge=1.0, le=20.0, description="A pixel moves when it differs by this many times its usual noise."
    )
    min_diff: int = Field(7, ge=1, le=128, description="Luma difference below which nothing counts as motion.")
    moved_since_s: float = Field(
        0.08,  # two frames at 20-30 fps: further back lets the codec's less correlated noise through (tuning)
        ge=0.0,
        le=0.25,
        description="A moving pixel must also differ from the frame this long ago, in whole frames (at least the "
        "last): static changes drop out, and an object slower than its own width per frame is seen whole.",
    )
    edge_jitter_px: float = Field(
        0.5,
        ge=0.0,
        le=5.0,
        description="Sub-pixel jitter tolerated at edges: the threshold grows by this times the local gradient.",
    )
    min_pixels: int = Field(
        2, ge=1, le=100, description="Moving pixels a blob needs; fewer is sensor noise (unless very strong)."
    )
    single_pixel_k: float = Field(
        2.5, ge=1.0, le=20.0, description="A lone moving pixel counts when this many times over its threshold."
    )
    warmup_s: float = Field(
        0.5,
        ge=0.0,
        le=30.0,
        description="Seconds to learn the background before detecting: it and the noise start as a plain mean "
        "of the frames seen, so half a second (12 frames at 25 fps) knows each pixel's noise to about a quarter.",
    )
    max_blob_frac: float = Field(
        0.003,
        gt=0.0,
        le=0.2,
        description="Blobs larger than this fraction of the frame are ignored (clouds).",
    )
    max_blobs: int = Field(
        300,
        ge=10,
        le=10000,
        description="Blobs kept in one frame; in a busier one (rain, IR grain) the faintest are left out.",
    )
    global_change_frac: float = Field(
        0.04, gt=0.0, le=1.0, description="Changed fraction of the frame that marks a whole-frame event."
    )
    global_luma_step: float = Field(
        6.0, gt=0.0, le=255.0, description="Jump of mean luma that marks an exposure step or IR switch."
    )
    suppress_s: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description="Seconds after a whole-frame event during which no new blob is trusted (a few frames).",
    )
    stabilize: bool = Field(True, description="Compensate camera shake by aligning each frame to the background.")
    shake_min_px: float = Field(
        0.4, ge=0.0, le=20.0, description="Global shifts smaller than this are treated as no shake."
    )
    shake_max_px: float = Field(
        24.0, ge=1.0, le=200.0, description="Largest shake compensated; larger jumps become whole-frame events."
    )


class TrackerConfig(Strict):
    """Constant-acceleration Kalman tracker for small fast objects."""

    gate_sigma: float = Field(
        4.0, ge=1.0, le=10.0, description="Association gate in standard deviations of the predicted position."
    )
    gate_min_px: float = Field(3.0, ge=0.5, le=50.0, description="Association gate never narrower than this.")
    gate_speed_frac: float = Field(
        0.5,
        ge=0.0,
        le=5.0,
        description="The gate also widens by this fraction of the track's speed per frame (blurred streaks).",
    )
    max_speed_frac: float = Field(
        1.5,
        gt=0.0,
        le=10.0,
        description="Fastest a new object may cross the image, in frame heights per second (frame-rate free).",
    )
    local_clutter: bool = Field(
        True, description="Weigh each detection against the clutter near it (a map), not the whole frame's."
    )
    max_missed: int = Field(4, ge=1, le=50, description="Frames a track may go undetected before it ends.")
    max_missed_falling: int = Field(
        10, ge=1, le=100, description="The same for a track already judged a fall (it is well predicted)."
    )
    max_tracks: int = Field(
        48,
        ge=1,
        le=1000,
        description="Tracks kept at once; beyond, a newcomer replaces a track seen once or twice.",
    )
    measurement_px: float = Field(1.0, gt=0.0, le=20.0, description="Position noise of a detection in pixels.")
    measurement_size_frac: float = Field(
        0.15,
        ge=0.0,
        le=2.0,
        description="Position noise also grows by this share of the blob's size (blur streaks, merged blobs).",
    )
    measurement_size_max_px: float = Field(
        5.0, ge=0.0, le=100.0, description="...by at most this much: a big swaying blob is no precise object."
    )
    same_object_frac: float = Field(
        0.025,
        gt=0.0,
        le=0.5,
        description="A new fall this close (fraction of height) to an existing fall's path is the same object.",
    )
    jerk_px: float = Field(
        0.3, gt=0.0, le=20.0, description="How much the acceleration may change per frame (drag, wind)."
    )
    stitch_gap_s: float = Field(
        1.0,
        ge=0.0,
        le=5.0,
        description="A new track may continue a track lost this long ago (a paper that tumbles out of sight).",
    )
    stitch_min_hits: int = Field(
        5, ge=2, le=100, description="...when the lost track was seen at least this often (not a chance chain)."
    )
    stitch_sigma: float = Field(
        3.0,
        gt=0.0,
        le=20.0,
        description="...and one curve passes within this many position sigmas of every detection of both.",
    )
    chain_len: int = Field(
        4,
        ge=3,
        le=20,
        description="In a busy frame, leftover blobs that line up this many frames in a row start a track.",
    )
    chain_sigma: float = Field(
        2.5,
        gt=0.0,
        le=10.0,
        description="...each within this many sigmas of where the last two put it (chance stays rare).",
    )
    chain_tracks: int = Field(
        16, ge=0, le=1000, description="Tracks started from such chains kept at once, beyond max_tracks."
    )
    chain_back_s: float = Field(
        2.0,
        ge=0.0,
        le=5.0,
        description="A chain's track is followed back this far to where it began (a 20-floor fall takes ~3.5 s).",
    )
    lead_in_s: float = Field(
        4.0,
        ge=0.0,
        le=10.0,
        description="Once a track is judged a fall, the blobs of this many last seconds (counted back from then) "
        "are searched for where its object first showed, back to its release: its origin and where its "
        "trajectory starts, never its level. A track picked up late in clutter begins seconds after release.",
    )
    lead_in_gap_s: float = Field(
        1.5,
        ge=0.0,
        le=5.0,
        description="...and its object may go unseen this long between two of them (a paper or a bag tumbling "
        "edge-on shows in a third of its frames), where a track ends after max_missed frames (never less than "
        "that). Chosen on the tuning suites: 1 s left a paper 4 floors low, 2 s found no more than 1.5.",
    )
    # Off by default: on held-out clips it found no throw more and raised suspected alarms 1 -> 4, though it
    # found seven more on the tuning suites (README: Benchmarks, tried since).
    search_tracks: int = Field(
        0,
        ge=0,
        le=1000,
        description="Faint tracks per frame that look for their missed object below the blob threshold (0: off).",
    )
    search_snr: float = Field(
        5.0,
        gt=0.0,
        le=50.0,
        description="...found when the object's footprint stands this many noise spreads above its surroundings.",
    )
    search_max_strength: float = Field(
        5.0,
        ge=0.0,
        le=100.0,
        description="...when its last blobs were at most this many times over threshold (faint ones fade below).",
    )
    search_sigma: float = Field(
        3.0,
        gt=0.0,
        le=10.0,
        description="...within this many sigmas of its predicted position: a low threshold needs a tight gate.",
    )
    search_max_px: float = Field(
        24.0, gt=0.0, le=200.0, description="...within its gate, at most this far from where it was predicted."
    )


SHIPPED_VERIFIER = Path(__file__).resolve().parents[1] / "models" / "fall-verifier" / "model.onnx"


class VerifierConfig(Strict):
    """The learned second look at each track physics reports (models/fall-verifier/MODEL_CARD.md)."""

    model: ConfigPath | None = Field(
        None, description="ONNX model scoring each candidate track; null turns the second look off."
    )
    veto_below: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Scored below this, a suspected fall is not reported and a confirmed one only suspected.",
    )
    confirm_above: float = Field(
        0.9, ge=0.0, le=1.0, description="Scored at least this, a suspected fall is confirmed."
    )

    @field_validator("model")
    @classmethod
    def _loads(cls, path: Path | None) -> Path | None:
        # A bad model is a config error at start (exit 78), never a crash mid-stream.
        if path is None:
            return None
        from edge.verifier import ModelError, check_model

        try:
            check_model(path)
        except ModelError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return path

    @model_validator(mode="after")
    def _veto_below_confirm(self) -> VerifierConfig:
        if self.veto_below >= self.confirm_above:
            raise ValueError(
                f"veto_below ({self.veto_below}) must be below confirm_above ({self.confirm_above}): "
                "a score cannot both veto and confirm"
            )
        return self


class FallConfig(Strict):
    """When a track is a falling object, from physics."""

    min_points: int = Field(6, ge=4, le=200, description="Detections a track needs before it is judged.")
    min_fall_floors: float = Field(
        2.0, ge=0.5, le=50.0, description="With a facade calibration: it must fall at least this many floors."
    )
    suspect_fall_share: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="Calibrated: this share of the minimum fall raises a suspected alert; confirmed needs all.",
    )
    min_fall_frac: float = Field(
        0.12,
        gt=0.0,
        le=1.0,
        description="Without calibration: it must fall this fraction of the frame height.",
    )
    uncalibrated_min_accel_share: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Without calibration: share of the fall its acceleration must explain (steady movers fail).",
    )
    gravity_mps2: float = Field(9.81, gt=0.0, le=20.0, description="Gravitational acceleration.")
    confirm_min_accel_g: float = Field(
        0.45,
        ge=0.0,
        le=2.0,
        description="Confirmed needs a fitted downward acceleration of at least this × g.",
    )
    max_accel_g: float = Field(
        1.3, ge=1.0, le=5.0, description="Tracks accelerating down faster than this × g are not free falls."
    )
    min_accel_g: float = Field(
        -0.5, ge=-5.0, le=1.0, description="Tracks slowing their fall harder than this × g are not falling freely."
    )
    max_speed_mps: float = Field(
        45.0,
        gt=0.0,
        le=200.0,
        description="Faster than anything dropped from a residential block (rain, glitches).",
    )
    min_detected_frac: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Share of frames in which a track must be seen (random chains fall short).",
    )
    faint_min_detected_frac: float = Field(
        0.4, ge=0.0, le=1.0, description="The same for a faint object, which drops out when near its threshold."
    )
    faint_strength: float = Field(
        5.0, ge=1.0, le=100.0, description="Faint: blobs at most this many times over their motion threshold."
    )
    max_entry_speed_mps: float = Field(
        8.0,
        gt=0.0,
        le=200.0,
        description="A fall first seen below the top edge already this fast should have been seen higher up.",
    )
    entry_margin_frac: float = Field(
        0.1, ge=0.0, le=1.0, description="Band at the top of the frame (fraction of height) where falls enter."
    )
    min_speed_mps: float = Field(
        2.5, ge=0.0, le=50.0, description="Mean falling speed needed; leaves and feathers fall slower."
    )
    max_object_m: float = Field(
        1.2,
        gt=0.0,
        le=20.0,
        description="Calibrated: wider than this on the facade is no thrown object (insects near the lens).",
    )
    size_slack_px: float = Field(
        4.0, ge=0.0, le=50.0, description="Pixels of blur and codec halo taken off a blob's width before sizing."
    )
    max_horizontal_ratio: float = Field(
        0.8,
        ge=0.0,
        le=10.0,
        description="Sideways travel allowed per metre of fall (gliding birds exceed it).",
    )
    max_rise_frac: float = Field(
        0.2, ge=0.0, le=1.0, description="Fraction of steps that may go up (noise) before it is no fall."
    )
    fit_tol_px: float = Field(
        1.5, gt=0.0, le=50.0, description="RMS residual of the ballistic fit allowed, in pixels of the track."
    )
    min_evidence: float = Field(
        2.5,
        ge=-20.0,
        le=50.0,
        description="Track score per frame (nats): how much likelier an object than clutter made the track.",
    )
    weak_evidence_share: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Calibrated: a track scoring from this share of min_evidence up to it is reported (suspected "
        "only) when it falls like a body: the whole minimum fall, on a tight curve, at 0.7 g or more. 1 (or a "
        "min_evidence of 0 or less) believes no weak score.",
    )
    max_blur_excess_px: float = Field(
        4.0,
        ge=0.0,
        le=200.0,
        description="Blobs may be streaks this much longer than the track's step per frame (more is rain).",
    )
    fit_tol_blur_frac: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="The fit may also be off by this share of a blur streak's length beyond its width.",
    )
    fit_tol_m: float = Field(0.3, ge=0.0, le=10.0, description="Extra RMS residual allowed, in metres.")
    suspect_score: float = Field(0.35, ge=0.0, le=1.0, description="Score from which a fall is reported.")
    confirm_score: float = Field(0.6, ge=0.0, le=1.0, description="Score from which a fall is confirmed.")
    origin_fit_s: float = Field(
        0.6, ge=0.1, le=5.0, description="The origin is fitted to this first part of the track, before drag tells."
    )
    max_backtrack_s: float = Field(
        2.0,
        ge=0.0,
        le=5.0,
        description="How far back in time the origin may be extrapolated from the track. Speed over g is the "
        "least time an object first seen at that speed has been falling (drag only makes it longer); 2 s is "
        "a 20 m fall unseen, past which the speed of a track's first points is too uncertain to go further. "
        "Without a calibration there is no g to divide by: at most 0.8 s back then.",
    )
    release_out_m: float = Field(
        0.75,
        ge=0.0,
        le=5.0,
        description="How far in front of the calibrated wall a throw leaves the hand (an arm out of a window, "
        "0.3 m, to one over a balcony rail, 1.2 m: the middle): "
        "seen from below it hides a higher wall point, so the origin is brought down along the camera's ray. "
        "Needs a calibration with perspective (the camera's pose); 0 turns it off.",
    )
    release_out_speed_mps: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="How fast a throw moves away from the wall as it falls (a toss out of a window; 0 where "
        "objects are dropped, not thrown: a drop is then put about a metre low at 60 m): the further out, the "
        "higher the wall point it hides, so a track first seen a second after release is placed that much "
        "further out before its origin is found. Used only where release_out_m is (a calibration that places "
        "the camera, and release_out_m above 0 and under half the camera's distance).",
    )
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)


class CameraHealthConfig(Strict):
    """Camera problems as events: offline, covered, blinded, defocused, moved (README: Camera problem events).

    The picture checks look at one frame per `sample_s`, downscaled, so they cost almost nothing per frame. Each
    problem is raised only after it has lasted its `*_s` and cleared only after `clear_s` of normal pictures:
    what real cameras do normally (an IR switch, an exposure step, a bird or a hand in front of the lens, rain,
    dusk) passes within seconds and never raises one.
    """

    enabled: bool = Field(True, description="Watch this camera for the problems below and report them.")
    sample_s: float = Field(
        1.0, ge=0.1, le=60.0, description="One frame checked per this many seconds (~10 ms at 1080p)."
    )
    offline_alert_s: float = Field(
        120.0,
        ge=5.0,
        le=86400.0,
        description="Offline this long raises `offline`: longer than a camera's reboot or update (1-2 min).",
    )
    covered_s: float = Field(
        30.0,
        ge=1.0,
        le=86400.0,
        description="A featureless picture this long raises `covered`: a hand, a bird or a bug passes in seconds.",
    )
    covered_max_detail: float = Field(
        4.0,
        gt=0.0,
        le=255.0,
        description="Featureless: the strongest 1% of edges in a 160 px copy are below this many luma levels.",
    )
    blinded_s: float = Field(
        30.0,
        ge=1.0,
        le=86400.0,
        description="Mostly full white this long raises `blinded`: headlights and IR-switch flashes last seconds.",
    )
    blinded_share: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="Share of the picture at full white that blinds it (more than any facade camera's sky).",
    )
    defocused_s: float = Field(
        60.0,
        ge=1.0,
        le=86400.0,
        description="Sharpness collapsed this long raises `defocused`: rain on the lens and fog come and go.",
    )
    defocused_ratio: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Collapsed: fine detail below this share of the camera's own learned normal (contrast-free).",
    )
    learn_s: float = Field(
        60.0,
        ge=1.0,
        le=86400.0,
        description="Pictures the normal sharpness is first learned from (then it follows slowly, over an hour).",
    )
    moved_s: float = Field(
        30.0,
        ge=1.0,
        le=86400.0,
        description="The view shifted this long raises `moved`: a shake or a mast swaying in wind is seconds.",
    )
    moved_shift: float = Field(
        0.02,
        gt=0.0,
        le=0.5,
        description="Shifted: moved by this share of its width against the reference (about half a storey).",
    )
    moved_lost_s: float = Field(
        900.0,
        ge=1.0,
        le=86400.0,
        description="The reference not recognised at all this long also raises `moved` (turned away, blocked).",
    )
    clear_s: float = Field(
        10.0,
        ge=0.0,
        le=3600.0,
        description="A raised problem clears after this long of normal pictures (or online), so it does not flap.",
    )
    reference: ConfigPath | None = Field(
        None,
        description=(
            "Reference still for `moved`; unset: `<config>.<camera>.reference.jpg` beside the config, as `edge "
            "calibrate` stores it; without one, a reference is learned from the first pictures (and it says so)."
        ),
    )

    @model_validator(mode="after")
    def _sample_fits(self) -> CameraHealthConfig:
        shortest = min(self.covered_s, self.blinded_s, self.defocused_s, self.moved_s)
        if self.sample_s * 3 > shortest:
            raise ValueError(
                f"sample_s ({self.sample_s}) must be at most a third of the shortest persistence ({shortest} s): "
                "a problem needs a few checks to be told from a moment"
            )
        return self


class CameraConfig(Strict):
    source: str = Field(min_length=1, description="rtsp:// URL, /dev/videoN or a video file path.")
    fps: float | None = Field(None, gt=0.0, le=240.0, description="Frame rate, when the stream does not say.")
    facade: FacadeConfig | None = Field(None, description="Facade calibration; without it, no floor.")
    masks: MasksConfig = Field(default_factory=MasksConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    fall: FallConfig = Field(default_factory=FallConfig)
    health: CameraHealthConfig = Field(default_factory=CameraHealthConfig)

    @field_validator("source")
    @classmethod
    def _file_beside_config(cls, source: str, info: ValidationInfo) -> str:
        # A stream or an FFmpeg input (rtsp://..., pipe:0) or an absolute path (a device) is as written; a
        # relative file, as every path.
        if _SCHEME.match(source):
            return source
        resolved = beside_config(Path(source), info)
        return source if resolved == Path(source) else str(resolved)  # unmoved: as written, not normalised


class EdgeConfig(Strict):
    version: Literal[1] = Field(description="Config format version.")
    node: NodeConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="Camera settings deep-merged into every camera."
    )
    cameras: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")], CameraConfig] = Field(
        min_length=1, description="The cameras of this node, by name."
    )

    _from_env: list = PrivateAttr(default_factory=list)  # (path, text as written) filled from the environment
    _file: Path | None = PrivateAttr(None)  # the file it was loaded from: camera reference stills sit beside it

    def camera(self, name: str | None) -> tuple[str, CameraConfig]:
        """The camera called `name`, or the only one when `name` is None."""
        if name is None:
            if len(self.cameras) != 1:
                raise ConfigError(None, None, "cameras", sorted(self.cameras), "several cameras: name one")
            return next(iter(self.cameras.items()))
        if name not in self.cameras:
            raise ConfigError(None, None, "cameras", name, f"no camera named {name!r}")
        return name, self.cameras[name]


@dataclass
class ConfigError(Exception):
    """A config problem, located in the file for the installer."""

    file: str | None
    line: int | None
    path: str
    value: Any
    why: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "config")
        got = f" (got {_short(self.value)})" if self.value is not None else ""
        return f"{where}: {self.path or '(top)'}: {self.why}{got}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _fill_env(data: Any, path: tuple, missing: list[tuple]) -> Any:
    if isinstance(data, dict):
        return {k: _fill_env(v, (*path, k), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_fill_env(v, (*path, i), missing) for i, v in enumerate(data)]
    if isinstance(data, str):

        def sub(m: re.Match) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            missing.append((path, m.group(1)))
            return m.group(0)

        return _ENV.sub(sub, data)
    return data


def _env_reference(data: Any, path: tuple) -> tuple | None:
    """The key path of the first value holding a ${NAME}, or None."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return path if isinstance(data, str) and _ENV.search(data) else None
    return next((p for k, v in items if (p := _env_reference(v, (*path, k))) is not None), None)


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, recursing into mappings; lists and scalars are replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def yaml_line(root: yaml.Node | None, path: tuple) -> tuple[int | None, bool]:
    """1-based line of the deepest node found along `path`, and whether the whole path was found."""
    node, line = root, None
    for part in path:
        if node is None:
            return line, False
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    nxt, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is None:
        return line, False
    return node.start_mark.line + 1, True


def _line_of(root: yaml.Node | None, path: tuple) -> int | None:
    return yaml_line(root, path)[0]


def _locate(root: yaml.Node | None, loc: tuple) -> int | None:
    # A camera setting may have come from `defaults:`; point there when the camera does not spell it out.
    line, found = yaml_line(root, loc)
    if not found and len(loc) > 2 and loc[0] == "cameras":
        d_line, d_found = yaml_line(root, ("defaults", *loc[2:]))
        if d_found:
            return d_line
    return line


MAX_BYTES = 256 * 1024  # a site with dozens of cameras is a few tens of KiB
MAX_DEPTH = 24  # the deepest real setting is 7 levels down (cameras.x.masks.privacy[0][1][0])
MAX_INT_DIGITS = 30  # no setting needs a longer number; Python refuses ints over 4300 digits with a traceback

_INT, _MERGE, _DATE = "tag:yaml.org,2002:int", "tag:yaml.org,2002:merge", "tag:yaml.org,2002:timestamp"


class _Refused(Exception):
    def __init__(self, line: int | None, path: tuple, why: str):
        super().__init__(why)
        self.line, self.path, self.why = line, path, why


class _Loader(yaml.SafeLoader):
    """Safe YAML with the bounds a config needs, checked while composing, before anything is built.

    Anchors and aliases are refused outright (a config has no need for them, `defaults:` shares camera settings,
    and they are how a 400-byte file expands to gigabytes); so are merge keys (`<<`), duplicate keys, nesting
    deeper than MAX_DEPTH and integers longer than MAX_INT_DIGITS. Dates stay text (no setting is a date).
    """

    yaml_implicit_resolvers = {
        k: [r for r in v if r[0] != _DATE] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str):
        super().__init__(stream)
        self._path: list = []
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        part = index.value if isinstance(index, yaml.ScalarNode) else index  # None: a key, or the document
        path = (*self._path, part) if part is not None else tuple(self._path)
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            why = "anchors and aliases (& and *) are not accepted: write values out (shared settings: defaults:)"
            raise _Refused(line, path, why)
        if self._depth >= MAX_DEPTH:
            raise _Refused(line, path, f"nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        if part is not None:
            self._path.append(part)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if part is not None:
                self._path.pop()

    def compose_scalar_node(self, anchor):
        node = super().compose_scalar_node(anchor)
        digits = node.value.lstrip("+-").replace("_", "")
        if node.tag == _INT and len(digits) > MAX_INT_DIGITS:
            raise _Refused(node.start_mark.line + 1, tuple(self._path), f"a number of {len(digits)} digits")
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[str, int] = {}
        for key, _ in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise _Refused(line, tuple(self._path), "a key must be a plain name, not a list or mapping")
            if key.tag == _MERGE:
                raise _Refused(line, tuple(self._path), "merge keys (<<) are not accepted: use defaults:")
            if key.value in seen:
                why = f"duplicate key {key.value!r} (first at line {seen[key.value]})"
                raise _Refused(line, (*self._path, key.value), why)
            seen[key.value] = line
        return node


def _read_yaml(text: str, file: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of a YAML text, within the bounds of _Loader."""
    if len(text) > MAX_BYTES:
        why = f"too large for a config ({len(text)} characters, at most {MAX_BYTES})"
        raise ConfigError(file, None, "", None, why)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except _Refused as exc:
        raise ConfigError(file, exc.line, key_path(exc.path), None, exc.why) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        why = f"not valid YAML: {getattr(exc, 'problem', None) or exc}"
        raise ConfigError(file, mark.line + 1 if mark else None, "", None, why) from None
    finally:
        loader.dispose()


def parse_config(text: str, file: str = "config", config_dir: Path | None = None) -> EdgeConfig:
    """Validate YAML text into an EdgeConfig, raising ConfigError at the first problem found.

    `config_dir` is the folder the text was read from: relative paths in it are that folder's (`ConfigPath`);
    without one, the working directory's.

    Every failure is a ConfigError (exit 78 from the CLI), never a traceback: a unit restarted after a
    traceback would restart forever on a config that cannot get better by itself.
    """
    try:
        return _parse(text, file, config_dir)
    except ConfigError:
        raise
    except Exception as exc:  # anything a hostile file still provokes is a config error, not a crash
        raise ConfigError(
            file, None, "", None, f"cannot be read as a config ({type(exc).__name__}: {exc})"
        ) from None


def read_mapping(
    text: str, file: str, what: str = "config", environment: bool = True
) -> tuple[yaml.Node | None, dict, dict]:
    """YAML text through the bounded loader: (its node tree, the mapping as written, with ${ENV} filled).

    Raises ConfigError for an empty file, a file that is not a mapping, or an unset variable. `what` names
    the file in those messages (the node's config, the center's roster...). Without `environment`, any
    ${NAME} is refused, set or not, with or without a default (text typed on a page must not read, nor
    probe, the environment where a process keeps its secrets).
    """
    root, raw = _read_yaml(text, file)
    if raw is None:
        raise ConfigError(file, None, "", None, f"the {what} file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(file, 1, "", type(raw).__name__, f"the {what} must be a mapping of sections")
    if not environment:
        if (path := _env_reference(raw, ())) is not None:
            why = "a value from the environment (${NAME}) is not taken here: write the value itself"
            raise ConfigError(file, _line_of(root, path), key_path(path), None, why)
        return root, raw, raw
    missing: list[tuple] = []
    data = _fill_env(raw, (), missing)
    if missing:
        path, name = missing[0]
        why = f"environment variable {name} is not set"
        raise ConfigError(file, _line_of(root, path), key_path(path), f"${{{name}}}", why)
    return root, raw, data


def validation_problem(
    exc: ValidationError,
    root: yaml.Node | None,
    file: str,
    locate: Callable[[yaml.Node | None, tuple], int | None] | None = None,
) -> ConfigError:
    """The first error pydantic found, as a ConfigError at its line (`locate`: line of a key path)."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    value = err.get("input") if err["type"] != "missing" else None
    if err["type"] == "extra_forbidden":
        why = f"unknown key {loc[-1]!r}"
    elif err["type"] == "missing":
        why = "required key is missing"
    else:
        why = err["msg"].removeprefix("Value error, ")
    if isinstance(value, dict | list):
        value = None  # a whole section is no help in a one-line message; the path names it
    return ConfigError(file, (locate or _locate)(root, loc), key_path(loc), value, why)


def _parse(text: str, file: str, config_dir: Path | None) -> EdgeConfig:
    root, raw, data = read_mapping(text, file)
    data, raw = _merge_defaults(data), _merge_defaults(raw)
    try:
        config = EdgeConfig.model_validate(data, context={CONFIG_DIR: config_dir})
    except ValidationError as exc:
        raise validation_problem(exc, root, file) from None
    config._from_env = list(_substituted(raw, data, ()))
    return config


def _merge_defaults(data: dict) -> dict:
    defaults = data.get("defaults") or {}
    cameras = data.get("cameras")
    if isinstance(defaults, dict) and isinstance(cameras, dict):
        merged = {k: deep_merge(defaults, v) if isinstance(v, dict) else v for k, v in cameras.items()}
        return {**data, "cameras": merged}
    return data


def _substituted(raw: Any, filled: Any, path: tuple):
    """(path, text as written) of every string the environment filled in."""
    if isinstance(raw, dict) and isinstance(filled, dict):
        for k, v in raw.items():
            yield from _substituted(v, filled.get(k), (*path, k))
    elif isinstance(raw, list) and isinstance(filled, list):
        for i, (a, b) in enumerate(zip(raw, filled, strict=False)):
            yield from _substituted(a, b, (*path, i))
    elif isinstance(raw, str) and raw != filled:
        yield path, raw


def key_path(loc: tuple) -> str:
    """A pydantic location as the dotted key path a config error names (`cameras.a.masks[0]`)."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def read_text(path: str | Path, what: str = "config") -> str:
    """A YAML file's text, read bounded and as UTF-8; raises ConfigError (a directory, unreadable, too big)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(str(p), None, "", str(p), f"is a directory, not a {what} file")
    try:
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # bounded: /dev/zero or a huge file is refused, not swallowed
    except OSError as exc:
        raise ConfigError(str(p), None, "", str(p), f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(str(p), None, "", None, f"too large for a {what} (over {MAX_BYTES} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(p), None, "", str(p), "not UTF-8 text") from None


def config_folder(path: str | Path) -> Path:
    """The folder relative paths in the config file at `path` are read from: its own, made absolute."""
    return Path(path).absolute().parent


def load_config(path: str | Path) -> EdgeConfig:
    """Read and validate a config file; raises ConfigError (also for an unreadable or oversized file)."""
    config = parse_config(read_text(path), str(path), config_folder(path))
    config._file = Path(path)
    return config


EX_CANTCREAT = 73


class StorageError(Exception):
    """storage.dir cannot be written: `edge run` exits EX_CANTCREAT (73)."""


def storage_problem(config: EdgeConfig) -> str | None:
    """Why this user could not write under storage.dir, or None; checked without creating anything."""
    path = config.storage.dir
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user (uid {os.geteuid()})"
    return None


def broker_user_problem(config: EdgeConfig) -> str | None:
    """Why the shipped broker ACL would drop this node's messages, or None: it lets a node write only under
    <topic_prefix>/<its user name>/, and acknowledges what it drops, so nothing else would tell."""
    mqtt = config.mqtt
    if not mqtt.enabled or mqtt.username is None or mqtt.username == config.node.id:
        return None
    return (
        f"mqtt.username {mqtt.username!r} is not node.id {config.node.id!r}: under the shipped broker ACL "
        f"(configs/mosquitto/acl) every alert to {mqtt.topic_prefix}/{config.node.id}/... is acknowledged "
        "and dropped"
    )


def prepare_storage(config: EdgeConfig) -> None:
    """Create storage.dir and prove a file can be written in it; StorageError naming the path otherwise."""
    path = config.storage.dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise StorageError(f"storage.dir {path}: cannot write there: {exc.strerror or exc}{where}") from None


def redacted_config(config: EdgeConfig) -> dict:
    """The validated config as JSON data with every secret replaced by a fixed marker: what config_hash hashes.

    Values the environment filled in appear as written (`${NAME}`); camera URLs lose user-info passwords and
    secret-looking query parameters (source.redact); the MQTT password is `***`.
    """
    from edge.capture.source import redact  # local: the capture package pulls in PyAV

    out = config.model_dump(mode="json")
    for path, written in config._from_env:
        _put(out, path, written)
    for cam in out["cameras"].values():
        cam["source"] = redact(cam["source"])
    if isinstance(out["defaults"].get("source"), str):
        out["defaults"]["source"] = redact(out["defaults"]["source"])
    if out["mqtt"].get("password") is not None:
        out["mqtt"]["password"] = "***"
    return out


def _put(tree: Any, path: tuple, value: str) -> None:
    """Set tree[path] = value; where the path leaves the tree's shape, replace the deepest part that exists."""
    parent, key, node = None, None, tree
    for part in path:
        inside = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not inside:
            break
        parent, key, node = node, part, node[part]
    if parent is not None:
        parent[key] = value


def config_hash(config: EdgeConfig) -> str:
    """SHA-256 of the validated config without its secrets, recorded in evidence to show which settings made it.

    Secrets are replaced by fixed markers first (redacted_config): the hash is published in every manifest, and
    a hash over a config holding passwords would let anyone test guesses of them offline.
    """
    text = json.dumps(redacted_config(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def json_schema() -> dict:
    """JSON Schema of the config file, for editors."""
    return EdgeConfig.model_json_schema()
