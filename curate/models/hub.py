"""Finding model weights without waiting on a network that is not there, shared by every model.

Offline machines are the norm for curation clusters: a cache miss must fail at once, in one line
that says how to provide the weights, not after a minute of retries. These helpers look in the
local caches first, probe a server once with a short timeout, and keep third-party loggers from
printing tracebacks over that one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.error
import urllib.request

import torch

from curate.errors import ModelUnavailable

PROBE_TIMEOUT_S = 5.0


def resolve_device(name: str, key: str) -> torch.device:
    """`auto` → the first CUDA device when there is one, else the CPU. `key` names the config
    setting in errors (e.g. aesthetic.device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelUnavailable(f"{key}={name} but CUDA is not available; use --set {key}=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelUnavailable(f"{key}={name} but only {torch.cuda.device_count()} CUDA devices are visible")
    return device


@contextlib.contextmanager
def seeded(seed: int):
    """Initialise weights from `seed` without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def hub_offline():
    """Make huggingface_hub answer from its local cache only, as HF_HUB_OFFLINE=1 does, for the
    duration: a miss then fails at once instead of after a minute of retries."""
    try:
        from huggingface_hub import constants
    except ImportError:  # nothing then downloads from the hub
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def hub_offline_requested() -> bool:
    """Whether the user set HF_HUB_OFFLINE (read by huggingface_hub when it is imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def quiet_logs():
    """Libraries report a failed load with `logging.error` on the root logger (which also installs
    a stderr handler); the user gets our one-line ModelUnavailable instead."""
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None  # stops logging.basicConfig
    if guard is not None:
        root.addHandler(guard)
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)
        if guard is not None:
            root.removeHandler(guard)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the server of `url` answers at all: one HEAD request, no retries, through the proxy
    settings downloads use. Name lookups ignore socket timeouts, so the request runs in a daemon
    thread that is abandoned when late."""
    answered: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # an error status is still an answer
        except Exception:
            return
        answered.append(True)

    thread = threading.Thread(target=probe, name="curate-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(answered)


def fetch_snapshot(model: str, allow_patterns: list[str], kind: str, local_hint: str) -> str:
    """The local folder of `model`: a folder as given, or a Hugging Face hub id found in the local
    cache, or downloaded when the hub answers (only the files matching `allow_patterns`). A miss
    is one ModelUnavailable line naming the `kind` of model and how to provide it (`local_hint`:
    the setting that takes a local folder instead).

    The cache is looked at first and the hub probed once with a short timeout, so an offline
    machine fails in seconds rather than after a minute of retries.
    """
    if os.path.isdir(model):
        return model
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelUnavailable(f"{kind} folder not found: {model} ({local_hint}; a hub id looks like org/name)")
    from huggingface_hub import snapshot_download

    try:
        with quiet_logs():
            return snapshot_download(model, allow_patterns=allow_patterns, local_files_only=True)
    except Exception:  # not cached, whatever huggingface_hub calls the miss
        pass
    how = (
        f"run `hf download {model}` where the hub can be reached, into the cache under HF_HOME (then found "
        f"offline, also with HF_HUB_OFFLINE=1), or {local_hint}"
    )
    what = f"cannot load {kind} {model}: not in the local cache and"
    if hub_offline_requested():
        raise ModelUnavailable(f"{what} HF_HUB_OFFLINE is set; {how}")
    endpoint = hub_endpoint()
    if not reachable(endpoint):
        raise ModelUnavailable(f"{what} {endpoint.split('://')[-1]} is unreachable; {how}")
    try:
        return snapshot_download(model, allow_patterns=allow_patterns)
    except Exception as exc:
        raise ModelUnavailable(f"cannot download {kind} {model}: {reason(exc)}; {how}") from None


def reason(exc: BaseException) -> str:
    """The first line of an exception, short enough for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
