"""Hugging Face hub access for `atelier models`: file lists, sizes and resumable downloads into the hub cache.

huggingface_hub (2.x) deletes a partial download when it fails, so a pull that breaks starts over. Here the
bytes go to `blobs/<etag>.incomplete` in the same cache, and the next pull continues it with a Range request;
then hf_hub_download/snapshot_download link the finished blob into the snapshot exactly as they would have.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    WeakFileLock,
    build_hf_headers,
    get_session,
    hf_raise_for_status,
)
from tqdm import tqdm

NETWORK_ERRORS = (httpx2.TransportError, OfflineModeIsEnabled)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
PARTIAL = re.compile(r"^[0-9a-f]{40,64}\.incomplete$")
READ_BLOCK = 8 * 2**20
MAX_RETRIES = 3  # reconnects within one pull, each only after new bytes arrived


class HubError(RuntimeError):
    """A hub request failed; the message names the repo and the file, and says what to do."""

    def __init__(self, repo: str, filename: str, reason: str, *, network: bool = False) -> None:
        self.repo, self.filename, self.reason, self.network = repo, filename, reason, network
        super().__init__(f"cannot download {filename} from {repo}: {reason}")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repo at a commit."""

    path: str
    size: int | None
    etag: str | None = None  # the blob name in the cache (an LFS file's sha256), when known


def storage_folder(cache: str | Path, repo: str) -> Path:
    """The repo's folder inside a hub cache (models--org--name)."""
    return Path(cache) / repo_folder_name(repo_id=repo, repo_type="model")


def describe(e: BaseException) -> str:
    """A short human reason for a hub failure."""
    if isinstance(e, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    if isinstance(e, NETWORK_ERRORS):
        return f"the hub at {constants.ENDPOINT} is unreachable ({type(e).__name__}: {str(e)[:120]})"
    if isinstance(e, GatedRepoError):
        return "the repository is gated: accept its license on the hub and set HF_TOKEN"
    if isinstance(e, RepositoryNotFoundError):
        return "no such repository on the hub (or it is private: set HF_TOKEN)"
    if isinstance(e, EntryNotFoundError):
        return "no such file in the repository"
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        return f"the hub answered HTTP {e.response.status_code}"
    return f"{type(e).__name__}: {str(e)[:160]}"


def _fail(repo: str, filename: str, e: BaseException, extra: str = "") -> HubError:
    reason = describe(e) + (f"; {extra}" if extra else "")
    return HubError(repo, filename, reason, network=isinstance(e, NETWORK_ERRORS))


def remote_tree(repo: str, what: str) -> tuple[str, list[RemoteFile]]:
    """(commit, every file) of the repo's main branch; `what` names the files wanted, for errors."""
    api = HfApi()
    try:
        commit = str(
            api.repo_info(
                repo, revision=constants.DEFAULT_REVISION, timeout=constants.HF_HUB_ETAG_TIMEOUT
            ).sha
        )
        entries = api.list_repo_tree(repo, recursive=True, revision=commit)
        files = [_remote(f) for f in entries if isinstance(f, RepoFile)]
    except (*NETWORK_ERRORS, HfHubHTTPError) as e:
        raise _fail(repo, what, e) from None
    return commit, files


def _remote(f: RepoFile) -> RemoteFile:
    return RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs is not None else f.blob_id)


def file_meta(repo: str, filename: str) -> tuple[int | None, str | None]:
    """(size, etag) of one hub file on the main branch (a HEAD request); HubError when the hub cannot say."""
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (*NETWORK_ERRORS, HfHubHTTPError) as e:
        raise _fail(repo, filename, e) from None
    return meta.size, meta.etag


class Bar(tqdm):
    """The download progress bar: bytes, on stderr, also when stderr is not a terminal."""

    def __init__(self, desc: str, total: int | None, initial: int) -> None:
        label = desc if len(desc) <= 48 else "…" + desc[-47:]
        super().__init__(
            desc=label, total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
            file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
        )  # fmt: skip


def fetch(repo: str, filename: str, cache: str | Path, revision: str = constants.DEFAULT_REVISION) -> Path:
    """Download one file's blob into the hub cache, resuming an earlier partial download; the blob's path."""
    try:
        meta = get_hf_file_metadata(
            hf_hub_url(repo, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    except (*NETWORK_ERRORS, HfHubHTTPError) as e:
        raise _fail(repo, filename, e) from None
    if not meta.etag:
        raise HubError(repo, filename, "the hub sent no ETag for it")
    storage = storage_folder(cache, repo)
    blob = storage / "blobs" / meta.etag
    if blob.is_file() and (meta.size is None or blob.stat().st_size == meta.size):
        return blob
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(cache) / ".locks" / storage.name / f"{meta.etag}.lock"  # the lock hf_hub_download takes
    lock.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(f"{meta.etag}.incomplete")
    with WeakFileLock(lock):
        _download(
            repo,
            filename,
            meta.location,
            partial,
            meta.size,
            _headers(meta.location, revision, repo, filename),
        )
        _verify(repo, filename, partial, meta.etag)
        os.replace(partial, blob)
    return blob


def _headers(location: str, revision: str, repo: str, filename: str) -> dict[str, str]:
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # byte ranges of the stored file, not of a compressed stream
    hub = urlparse(hf_hub_url(repo, filename, revision=revision)).netloc
    if urlparse(location).netloc != hub:
        headers.pop("authorization", None)  # a signed CDN URL: the token stays on the hub
    return headers


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _download(
    repo: str, filename: str, url: str, partial: Path, size: int | None, headers: dict[str, str]
) -> None:
    """Fill `partial` up to `size` bytes, reconnecting (with Range) while the server keeps sending data."""
    retries = 0
    while True:
        start = _size(partial)
        if size is not None and start > size:
            partial.unlink()
            start = 0
        if size is not None and start == size:
            return
        try:
            _stream(url, partial, start, size, filename, headers)
            return
        except (*NETWORK_ERRORS, HfHubHTTPError) as e:
            got = _size(partial)
            if isinstance(e, HfHubHTTPError) or got <= start or retries >= MAX_RETRIES:
                total = size if size is not None else "?"
                kept = f"{got} of {total} bytes are kept: run the pull again to resume" if got else ""
                raise _fail(repo, filename, e, kept) from None
            retries += 1


def _stream(
    url: str, partial: Path, start: int, size: int | None, filename: str, headers: dict[str, str]
) -> None:
    """One GET (a Range request from `start` when resuming) appended to `partial`, with a progress bar."""
    request = dict(headers, Range=f"bytes={start}-") if start else headers
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with get_session().stream("GET", url, headers=request, timeout=timeout, follow_redirects=True) as r:
        hf_raise_for_status(r)
        if start and r.status_code != 206:
            start = 0  # the server ignored the Range: start again
        length = r.headers.get("Content-Length")
        total = size if size is not None else (start + int(length) if length else None)
        with partial.open("r+b" if start else "wb") as f, Bar(filename, total, start) as bar:
            f.seek(start)
            f.truncate()
            for chunk in r.iter_bytes():
                f.write(chunk)
                bar.update(len(chunk))


def _verify(repo: str, filename: str, partial: Path, etag: str) -> None:
    """Check an LFS file (its ETag is the sha256 of its bytes); a mismatch discards the download."""
    if not SHA256.fullmatch(etag):
        return
    digest = hashlib.sha256()
    with partial.open("rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    if digest.hexdigest() != etag:
        partial.unlink()
        raise HubError(
            repo, filename, "the downloaded bytes do not match the hub's sha256 (discarded); pull again"
        )


class Hub:
    """Hub look-ups for one listing: stops asking once the hub is unreachable and says why once."""

    def __init__(self, *, offline: bool = False) -> None:
        self.endpoint = constants.ENDPOINT
        self.down: str | None = None  # the full reason, shown once
        self.short = "hub unreachable"
        self.answered = False
        if constants.is_offline_mode():
            self.down, self.short = "offline mode is on (HF_HUB_OFFLINE=1)", "offline mode"
        elif offline:
            self.down, self.short = "not asked (--offline)", "not asked: --offline"
        self._trees: dict[str, tuple[str, list[RemoteFile]] | str] = {}

    def tree(self, repo: str, what: str) -> tuple[tuple[str, list[RemoteFile]] | None, str]:
        """((commit, files), "") or (None, why not)."""
        if self.down:
            return None, self.short
        if repo not in self._trees:
            try:
                self._trees[repo] = remote_tree(repo, what)
                self.answered = True
            except HubError as e:
                self._trees[repo] = self._note(e)
        got = self._trees[repo]
        return (None, got) if isinstance(got, str) else (got, "")

    def meta(self, repo: str, filename: str) -> tuple[int | None, str | None, str]:
        """(size, etag, "") or (None, None, why they are unknown)."""
        if self.down:
            return None, None, self.short
        try:
            size, etag = file_meta(repo, filename)
        except HubError as e:
            return None, None, self._note(e)
        self.answered = True
        return size, etag, ""

    def _note(self, e: HubError) -> str:
        if e.network:
            self.down = e.reason
            return self.short
        return e.reason
