"""Download one large file over HTTP(S), verified by SHA-256: resumable, atomic, with a progress bar.

The bytes stream into ``.<name>.part`` beside the destination. An interrupted download continues from there
on the next call (HTTP Range; a server that ignores Range sends the whole file again), and only a file whose
SHA-256 matches is renamed onto the destination, so the destination is either absent or verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

from ..errors import InputError

CHUNK = 1 << 20
TIMEOUT_S = 30.0  # per connect / read, not for the whole file


class FetchError(InputError):
    """A download or checksum problem; the message is one line saying what failed and what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, hint: str = "") -> Path:
    """Fetch `url` to `dest` unless the download's SHA-256 differs from `sha256` (then it is deleted).

    `hint` is appended to the errors of an unreachable host or a refused request (how to get the file by hand).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    _stream(url, part, dest.name, f" {hint}" if hint else "")
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise FetchError(f"{url}: checksum mismatch: expected SHA-256 {sha256}, got {actual}; the download was "
                         "deleted and nothing else was changed")
    os.replace(part, dest)
    return dest


def _stream(url: str, part: Path, label: str, hint: str) -> None:
    """Append the rest of `url` to `part` (or write it whole when the server does not resume)."""
    offset = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urlopen(request, timeout=TIMEOUT_S)
    except HTTPError as err:
        if err.code == 416 and offset:  # nothing after `offset`: the partial file is whole; the checksum decides
            return
        raise FetchError(f"{url}: the server answered HTTP {err.code} {err.reason}.{hint}") from None
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise FetchError(f"cannot reach {urlsplit(url).netloc} ({reason}): offline?{hint}") from None
    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = offset > 0 and response.status == 206 and content_range.startswith(f"bytes {offset}-")
        offset = offset if resumed else 0
        total = offset + response.length if response.length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=None,
        ) as bar:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise FetchError(f"{url}: download interrupted after {f.tell()} bytes ({err or type(err).__name__}); "
                                 "run again to continue it") from None
