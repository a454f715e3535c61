"""The Hugging Face hub, as seen from a machine that may be offline: say so at once, in one line.

huggingface_hub retries an unreachable hub for about a minute and then blames the model; a user
on an offline machine should learn in a second that the id is not in the local cache.
"""

from __future__ import annotations

import socket

from flexopt.errors import FlexoptError


def hub_cached_or_reachable(repo: str, filename: str, what: str, allowed: str,
                            timeout: float = 3.0) -> bool:
    """True when `repo`'s `filename` is in the local cache (load it from there); False when the
    hub answers (download it); else a FlexoptError: "`what`: it is not in the local Hugging Face
    cache and <why>; `allowed`"."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, filename), str):
        return True
    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    why = None
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    elif not _reachable(host, 443, timeout):
        why = f"{host} cannot be reached from here (no answer within {timeout:g} s)"
    if why is not None:
        raise FlexoptError(f"{what}: it is not in the local Hugging Face cache and {why}; "
                           f"{allowed}")
    return False


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within `timeout`, name lookup included (a daemon thread:
    a resolver without network can hang for half a minute, and exiting must not wait for it)."""
    import threading

    done: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            done.append(True)
        except OSError:
            done.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(done and done[0])
