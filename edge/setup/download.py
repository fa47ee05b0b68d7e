"""Model files from the Hugging Face Hub: list a repo, fetch a pinned file, import a local one.

A thin layer over huggingface_hub (its cache under HF_HOME/hub, HTTP client, metadata call,
progress bars, exceptions) that adds what a small board needs:
- Resume across runs. Since huggingface_hub 1.18 a failed hf_hub_download deletes its partial file
  (huggingface_hub#4228, #4196), so a 5 GB download cut at 90% restarts at zero. We keep the partial
  as blobs/<etag>.incomplete (the name older versions resumed from; `hf cache scan` lists it) and
  continue it with a Range request, under huggingface_hub's own per-blob lock.
- Verification before placement: size and sha256 are checked before the bytes enter blobs/, so a
  corrupt download never sits where a good file belongs.
- One DownloadError line per failure, saying what to do next.
huggingface_hub copies HF_ENDPOINT/HF_HOME/HF_HUB_OFFLINE into `constants` at import; we re-read
them at call time and pass them explicitly, so settings made after import are obeyed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url, http_get, repo_folder_name
from huggingface_hub.utils import WeakFileLock, build_hf_headers
from huggingface_hub.utils import tqdm as hf_tqdm

from edge.errors import DownloadError, EdgeError, HubUnreachableError, ModelFileError, UsageError
from edge.setup.hub_answers import api_answers_checked, check_listing, not_a_hub, portal_error

try:  # the HTTP library huggingface_hub raises transport errors from: httpx2 since 2.0, httpx in 1.x
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _httpx

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HUB_ERRORS = (HfHubHTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, FileMetadataError, _httpx.TransportError)
_LOGIN = "log in with `hf auth login` or set HF_TOKEN"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None  # LFS files only; small files kept in git have no sha256 on the hub


@dataclass(frozen=True)
class RemoteListing:
    repo_id: str
    commit: str
    files: tuple[RemoteFile, ...]

    def get(self, name: str) -> RemoteFile | None:
        return next((f for f in self.files if f.name == name), None)


@dataclass(frozen=True)
class _Hub:
    endpoint: str
    cache_dir: Path
    token: str | None  # None: let huggingface_hub find one (env, token file, ...)
    offline: bool


def _hub(offline: bool = False) -> _Hub:
    env = os.environ
    home = Path(env["HF_HOME"]).expanduser() if env.get("HF_HOME") else None
    if env.get("HF_HUB_CACHE"):
        cache = Path(env["HF_HUB_CACHE"]).expanduser()
    else:
        cache = home / "hub" if home else Path(constants.HF_HUB_CACHE)
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
    token_file = Path(env["HF_TOKEN_PATH"]) if env.get("HF_TOKEN_PATH") else home / "token" if home else None
    if not token and token_file is not None and token_file.is_file():
        token = token_file.read_text().strip() or None
    offline = offline or env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    endpoint = (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    return _Hub(endpoint, cache, token, offline)


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads, honouring HF_HUB_CACHE / HF_HOME as set now."""
    return _hub().cache_dir


def list_remote_files(repo_id: str, revision: str | None = None) -> RemoteListing:
    """The files of a model repo at `revision` (default: main) with sizes, LFS sha256 and the commit."""
    hub = _hub()
    if hub.offline:
        # HubUnreachableError: a plan then falls back to the catalog's recorded sizes, as with no network.
        raise HubUnreachableError(
            f"Cannot list {repo_id}: offline mode is on (HF_HUB_OFFLINE); listing needs the network."
        )
    try:
        with api_answers_checked(hub.endpoint):
            api = HfApi(endpoint=hub.endpoint, token=hub.token)
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except _HUB_ERRORS as e:
        raise _explain(e, hub, repo_id, revision=revision) from e
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        # JSON that is not JSON (a login page) or not the Hub's shape: huggingface_hub cannot parse it.
        raise portal_error(hub.endpoint) from e
    try:
        files = tuple(RemoteFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings or ())
    except (TypeError, AttributeError, KeyError) as e:  # siblings that are not the Hub's records
        raise not_a_hub(hub.endpoint, repo_id) from e
    check_listing(repo_id, hub.endpoint, info.sha, files)
    return RemoteListing(repo_id, info.sha or "", files)


def fetch_file(
    repo_id: str, filename: str, *, revision: str, expected_sha256: str | None = None,
    expected_size: int | None = None, progress: bool = True, offline: bool = False, rehash: bool = False,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:  # fmt: skip
    """Path of `filename` from `repo_id` at commit `revision`, in the HF cache; downloads it if needed.

    A fresh download is verified against expected_size/expected_sha256 (or the hub's LFS sha256)
    before it enters the cache. A cached copy is checked cheaply: its size, and that its blob is
    named by the expected sha256 (huggingface_hub names LFS blobs by content hash); `rehash=True`
    reads it all again. A cached copy that fails is removed and, when online, downloaded again.
    `on_bytes(n)` hears each chunk as it arrives (serve's /api/pull reports progress with it).
    """
    if not _COMMIT.fullmatch(revision or ""):
        raise UsageError(
            f"revision must be a full 40-character commit hash, not {revision!r}: "
            "pin it from list_remote_files(repo_id).commit"
        )
    hub = _hub(offline)
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None

    cached = _cached_path(hub, repo_id, filename, revision)
    if cached is not None:
        problem = _check(cached, expected_size, expected_sha256, rehash=rehash, progress=progress)
        if problem is None:
            return cached
        _remove_cached(cached)
        if hub.offline:
            raise DownloadError(
                f"The cached {filename} was damaged ({problem}) and has been removed; "
                "run again without --offline to download it, or import a local copy with --gguf PATH."
            )
        log.warning("cached %s was damaged (%s); downloading it again", filename, problem)

    if hub.offline:
        raise DownloadError(
            f"{filename} ({repo_id}@{revision[:12]}) is not in the local cache ({hub.cache_dir}) and offline mode is "
            "on: run the same command once online (without --offline / HF_HUB_OFFLINE) to cache it, "
            "or import a local copy with --gguf PATH."
        )
    try:
        return _download(hub, repo_id, filename, revision, expected_sha256, expected_size, progress, on_bytes)
    except _HUB_ERRORS as e:
        raise _explain(e, hub, repo_id, filename=filename, revision=revision) from e


def _cached_path(hub: _Hub, repo_id: str, filename: str, revision: str) -> Path | None:
    # With a commit hash and local_files_only, huggingface_hub answers from the snapshot, no network.
    try:
        found = hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub.cache_dir, local_files_only=True)
    except LocalEntryNotFoundError:
        return None
    return Path(found)


def _download(
    hub: _Hub, repo_id: str, filename: str, revision: str, sha256: str | None, size: int | None, progress: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:  # fmt: skip
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub.endpoint)
    meta = get_hf_file_metadata(url, token=hub.token, endpoint=hub.endpoint)
    if not meta.etag:
        raise DownloadError(f"{hub.endpoint} sent no ETag for {filename}; check that HF_ENDPOINT points at a hub.")
    # Compare the pin with what the hub says before moving gigabytes: a mismatch is a stale catalog.
    hub_sha = meta.etag if _SHA256.fullmatch(meta.etag) else None
    stale = None
    if size is not None and meta.size is not None and meta.size != size:
        stale = f"{meta.size} bytes, not the {size} expected"
    elif sha256 and hub_sha and hub_sha != sha256:
        stale = f"sha256 {hub_sha[:12]}…, not the {sha256[:12]}… expected"
    if stale:
        raise DownloadError(f"{repo_id}/{filename}@{revision[:12]} on the hub has {stale}: the pinned entry is stale.")
    sha256, size = sha256 or hub_sha, size if size is not None else meta.size

    storage = hub.cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    blob = storage / "blobs" / meta.etag
    lock = hub.cache_dir / ".locks" / storage.name / f"{meta.etag}.lock"
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    # The same lock hf_hub_download takes for this blob: two processes never append to one partial.
    with WeakFileLock(lock):
        if not blob.exists():
            _transfer(hub, meta.location, blob, filename, size, sha256, progress, on_bytes)

    # The blob is in place and verified: huggingface_hub only adds the snapshot link and the ref.
    path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub.cache_dir,
                                endpoint=hub.endpoint, token=hub.token))  # fmt: skip
    problem = _check(path, size, sha256, rehash=False, progress=progress)
    if problem is not None:  # only possible for a blob someone else put there
        _remove_cached(path)
        raise DownloadError(f"{filename} in the cache failed verification ({problem}) and was removed; run again.")
    return path


def _transfer(
    hub: _Hub, url: str, blob: Path, filename: str, size: int | None, sha256: str | None, progress: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> None:  # fmt: skip
    partial = blob.with_name(blob.name + ".incomplete")
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:  # not a prefix of this file: start over
        partial.unlink()
        have = 0
    if size is not None:
        _require_space(size - have, blob.parent, f"download {filename}", DownloadError)

    headers = build_hf_headers(token=hub.token)
    if urlsplit(url).netloc != urlsplit(hub.endpoint).netloc:
        headers.pop("authorization", None)  # a signed CDN URL: the token must not leave the hub
    if have:
        log.info("resuming %s at byte %d", filename, have)
        if on_bytes is not None:
            on_bytes(have)
    if on_bytes is not None:
        bar = _reporting_bar(on_bytes)
    else:
        bar = None if progress else functools.partial(hf_tqdm, disable=True)
    try:
        with open(partial, "ab") as f:
            # http_get retries a dropped connection itself, with a Range request from where it stopped.
            http_get(url, f, resume_size=have, headers=headers, expected_size=size, displayed_filename=filename,
                     tqdm_class=bar)  # fmt: skip
    except (_httpx.TransportError, OSError) as e:
        if isinstance(e, HfHubHTTPError):
            raise
        got = partial.stat().st_size if partial.exists() else 0
        raise DownloadError(
            f"Download of {filename} stopped at {_human(got)} of {_human(size)} ({_first_line(e)}); "
            "run the same command again to resume from there."
        ) from e

    problem = _check(partial, size, sha256, rehash=True, progress=progress)
    if problem is not None:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{filename} failed verification after download ({problem}); the bad copy was deleted. Run again; if it "
            "keeps failing, the server or mirror (HF_ENDPOINT) is serving a damaged file."
        )
    os.replace(partial, blob)


def _reporting_bar(on_bytes: Callable[[int], None]):
    """A silent progress bar that tells `on_bytes` of every chunk http_get writes."""

    class Reporting(hf_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n=1):
            on_bytes(n)
            return super().update(n)

    return Reporting


def _check(path: Path, size: int | None, sha256: str | None, *, rehash: bool, progress: bool) -> str | None:
    """None if `path` has the expected size and content, else what is wrong with it."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes, expected {size}"
    if sha256 is None:
        return None
    blob_name = path.resolve().name
    if not rehash and _SHA256.fullmatch(blob_name):
        got = blob_name  # a content-addressed blob: its name is the sha256 it was verified against
    else:
        got = _sha256(path, progress)
    return None if got == sha256 else f"sha256 {got[:12]}…, expected {sha256[:12]}…"


def _sha256(path: Path, progress: bool) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    show = progress and size >= 64 << 20  # small files hash faster than a bar can draw
    bar = hf_tqdm(total=size, unit="B", unit_scale=True, desc=f"verify {path.name[:12]}", disable=not show)
    with open(path, "rb") as f, bar:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _remove_cached(pointer: Path) -> None:
    """Remove a bad cached file: its snapshot link and the blob it points to."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    if blob != pointer:
        blob.unlink(missing_ok=True)


def _require_space(needed: int, where: Path, what: str, error: type[EdgeError]) -> None:
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise error(
            f"Not enough disk space to {what}: it needs {_human(needed)} but {where} has only {_human(free)} free; "
            "free some space or use a bigger disk (for downloads, point HF_HOME at it)."
        )


def _explain(e: Exception, hub: _Hub, repo_id: str, *, filename: str | None = None, revision: str | None = None):
    """The one-line DownloadError for a huggingface_hub or network exception."""
    where = repo_id + (f"@{revision[:12]}" if revision else "")
    if isinstance(e, GatedRepoError):
        return DownloadError(
            f"{repo_id} is a gated repo: accept its terms at {hub.endpoint}/{repo_id} while logged in, then {_LOGIN}."
        )
    if isinstance(e, RepositoryNotFoundError):
        return DownloadError(
            f"Repository {repo_id} was not found on {hub.endpoint}; check its name (if it is private, {_LOGIN})."
        )
    if isinstance(e, RevisionNotFoundError):
        return DownloadError(f"Revision {revision} does not exist in {repo_id}; list the repo again for its commit.")
    if isinstance(e, RemoteEntryNotFoundError):
        return DownloadError(f"{filename} is not in {where}; {_files_hint(repo_id, revision, filename)}")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else 0
        if status == 401:
            return DownloadError(f"The hub rejected your token (401 Unauthorized) for {repo_id}: {_LOGIN} again.")
        if status == 403:
            return DownloadError(f"Access to {repo_id} is forbidden (403): {_LOGIN} with a token that can read it.")
        if status == 429:
            return DownloadError(f"The hub is rate-limiting requests (429): wait a few minutes, or {_LOGIN}.")
        if status >= 500:
            return DownloadError(
                f"The hub at {hub.endpoint} failed with HTTP {status} for {where}: try again later, "
                "or set HF_ENDPOINT to a mirror."
            )
        return DownloadError(f"The hub answered HTTP {status} for {where}: {_first_line(e)}")
    if isinstance(e, OfflineModeIsEnabled):
        return HubUnreachableError(f"Offline mode is on (HF_HUB_OFFLINE), so {where} cannot be reached; unset it.")
    if isinstance(e, FileMetadataError):
        return DownloadError(f"{hub.endpoint} does not answer like a Hugging Face hub; check HF_ENDPOINT.")
    return HubUnreachableError(
        f"Cannot reach the hub at {hub.endpoint} ({_first_line(e)}): check the network; use --offline to run from "
        "a cached copy, or set HF_ENDPOINT to a reachable mirror."
    )


def _files_hint(repo_id: str, revision: str | None, filename: str | None) -> str:
    try:
        names = [f.name for f in list_remote_files(repo_id, revision).files]
    except DownloadError:
        return "check the file name."
    # The files most like the one asked for (same extension) first; a GGUF repo has a dozen quants.
    suffix = Path(filename or "").suffix
    names.sort(key=lambda n: (not n.endswith(suffix), n))
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return f"files there: {shown}." if names else "the repo has no files."


def import_local(
    path: Path, dest_dir: Path, *, link: bool = False, validate: Callable[[Path], None] | None = None
) -> Path:
    """Put a user-supplied file into `dest_dir` under its own name, atomically; return the new path.

    Copies (or, with link=True, hard-links, else symlinks) to a hidden temp name in dest_dir, runs
    `validate` on it, then renames it into place: the final name never holds a partial or invalid file.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelFileError(f"{src} does not exist or is not a file; check the path.")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    if dest.exists() and os.path.samefile(src, dest):
        return dest
    # Hidden, unique, and ending like the real name, so a validator that looks at the suffix still works.
    tmp = dest_dir / f".{uuid.uuid4().hex[:8]}.{src.name}"
    try:
        if link:
            try:
                os.link(src, tmp)  # same file system: no copy, no extra space
            except OSError:
                os.symlink(src.resolve(), tmp)
        else:
            _require_space(src.stat().st_size, dest_dir, f"import {src.name}", ModelFileError)
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                shutil.copyfileobj(fin, fout, 4 << 20)
                fout.flush()
                os.fsync(fout.fileno())  # the data is on disk before the name says the file is complete
        if validate is not None:
            validate(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest_dir)  # make the rename itself durable
    return dest


def _fsync_dir(directory: Path) -> None:
    try:  # not possible on every platform (Windows); the rename is atomic regardless
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _human(n: int | None) -> str:
    if n is None:
        return "an unknown size"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]
