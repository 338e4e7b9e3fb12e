"""Whether W&B can be reached, the runs' rows from W&B, and saving (network only from here).

The offline decision (`offline_reason`) is made before any W&B call: WANDB_MODE offline/disabled,
no API key (WANDB_API_KEY or ~/.netrc for the W&B host), or the host not answering a TCP connect
within a few seconds. The key is never read out, only looked for.
"""

from __future__ import annotations

import hashlib
import netrc
import os
import socket
from typing import Any, Optional
from urllib.parse import urlparse

DEFAULT_BASE_URL = "https://api.wandb.ai"


def offline_reason(timeout_s: float = 3.0) -> Optional[str]:
    """None when W&B looks reachable with a key, else why not (one phrase)."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "disabled", "dryrun"):
        return f"W&B is {mode} (WANDB_MODE={mode})"
    url = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    host = url.hostname or "api.wandb.ai"
    if not _has_key(host):
        return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        return f"no network: {host}:{port} not reachable ({type(e).__name__})"
    return None


def _has_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def api(timeout_s: int = 30):
    import wandb

    return wandb.Api(timeout=timeout_s)


def fetch_rows(w_api: Any, path: str, group: Optional[str]) -> list[dict[str, Any]]:
    """Report rows (summaries only: the best lr needs no history) of the project's runs in `group` (or all)."""
    from harness.report.wandb_source import row_from_wandb

    rows = []
    for run in w_api.runs(path, filters={"group": group} if group else {}):
        summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        rows.append(row_from_wandb(summary, dict(run.config), run.name, run.state))
    return rows


def view_name(entity: str, project: str, display_name: str) -> str:
    """A stable internal view name (the form W&B generates: nw-<11 lowercase alphanumerics>-v), so
    running the command again updates the same view instead of adding one."""
    digest = int(hashlib.sha1(f"{entity}/{project}/{display_name}".encode()).hexdigest(), 16)
    alphabet, chars = "0123456789abcdefghijklmnopqrstuvwxyz", []
    for _ in range(11):
        digest, i = divmod(digest, 36)
        chars.append(alphabet[i])
    return f"nw-{''.join(chars)}-v"


def save_workspace(w: Any) -> str:
    """Create or update the view; returns its URL."""
    from wandb_workspaces.workspaces import internal

    name = view_name(w.entity, w.project, w.name)
    try:
        existing = internal.View.from_name(w.entity, w.project, name)
        object.__setattr__(w, "_internal_id", existing.id)
    except ValueError:  # not saved before
        pass
    object.__setattr__(w, "_internal_name", name)
    w.save()
    return w.url


def save_report(w_api: Any, r: Any) -> str:
    """Create the report, or update the one with the same title in the project; returns its URL."""
    for old in w_api.reports(f"{r.entity}/{r.project}"):
        if getattr(old, "display_name", None) == r.title:
            r.id = old.id
            break
    r.save()
    return r.url
