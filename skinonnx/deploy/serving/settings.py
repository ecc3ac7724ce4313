"""The service's knobs in one place: limits, batching, auth (docs/SERVE.md says how the defaults were chosen)."""

from __future__ import annotations

from dataclasses import dataclass

from ...data.images import DEFAULT_MAX_PIXELS

#: defaults measured with benchmarks/serve.py (docs/SERVE.md "Measured here"): on CPUs one image costs about the
#: same alone or in a batch, so waiting for company only adds latency; with no wait, batches still form from the
#: requests that queued while the previous call ran. Where batches are cheaper per image (GPUs), raise the wait.
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_MS = 0.0
DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_BODY_MB = 20.0


@dataclass(frozen=True)
class ServeSettings:
    model_name: str
    max_batch: int = DEFAULT_MAX_BATCH  # rows per ONNX Runtime call; 1 turns dynamic batching off
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS  # how long the first request of a batch waits for company
    max_queue: int = DEFAULT_MAX_QUEUE  # requests waiting for the model; past it: 503 + Retry-After
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    token: str | None = None  # bearer token; None: no auth
    access_log: bool = True

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_wait_ms < 0 or self.max_body_bytes < 1:
            raise ValueError("max_batch, max_queue, max_body_bytes >= 1 and max_wait_ms >= 0 are required")

    def batching_text(self) -> str:
        """How requests are batched, as `serve` says it at start ("off" for --max-batch 1, not "up to 1 rows")."""
        if self.max_batch == 1:
            return f"dynamic batching off (one row per ONNX Runtime call), queue {self.max_queue}"
        return f"dynamic batching: up to {self.max_batch} rows, {self.max_wait_ms:g} ms wait, queue {self.max_queue}"


def read_token_file(path: str) -> str:
    """The bearer token: the file's first line, stripped; an empty or unreadable file is an error."""
    from ...errors import SkinOnnxError

    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.readline().strip()
    except OSError as exc:
        raise SkinOnnxError(f"--token-file {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SkinOnnxError(f"--token-file {path}: not a text file") from None
    if len(token) < 16:
        raise SkinOnnxError(f"--token-file {path}: the token on its first line must be at least 16 characters")
    return token
