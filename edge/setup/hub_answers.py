"""What comes back from the Hub is checked before it is believed.

Networks people really have answer in ways the Hub never would: a captive portal (hotel, school)
returns 200 and a login page for every request; a proxy or a hijacked DNS redirects the API to
another host; a broken or hostile mirror lists names that climb out of the repo or sizes no Gemma 4
file has. Each becomes one line that names the likely cause and the fix, before anything is written.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from edge.errors import DownloadError

MAX_FILE_BYTES = 40 * 2**30  # the largest Gemma 4 E2B/E4B GGUF (E4B BF16) is ~15 GB; anything past 40 GiB is wrong
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_FIX_ENDPOINT = "unset HF_ENDPOINT to use huggingface.co, or point it at a mirror you trust"


class NotTheHub(DownloadError):
    """The answer came from something that is not a Hugging Face hub."""


def portal_error(endpoint: str) -> NotTheHub:
    return NotTheHub(
        f"the network answered {endpoint} with a web page, not the Hub: a captive portal or a "
        "proxy? Log in through a browser (hotel, school and guest Wi-Fi ask for it), or set "
        "HF_ENDPOINT to a reachable mirror"
    )


@contextlib.contextmanager
def api_answers_checked(endpoint: str) -> Iterator[None]:
    """While listing, refuse an API answer redirected to another host (file downloads may go to a CDN).

    huggingface_hub shares one HTTP client; a response hook is added to it for the duration and the
    default client is restored afterwards.
    """
    from huggingface_hub.utils import _http

    expected_host = urlsplit(endpoint).hostname

    def refuse_foreign_redirects(response) -> None:
        location = response.headers.get("location")
        if response.is_redirect and location and response.request.url.path.startswith("/api/"):
            target = urlsplit(str(response.request.url.join(location))).hostname
            if target != expected_host:
                raise NotTheHub(
                    f"{endpoint} sent its API to another host ({target}): a captive portal, a proxy "
                    f"or a hijacked name? Log in through a browser if this network asks for it, or "
                    f"{_FIX_ENDPOINT}"
                )

    def factory():
        client = _http.default_client_factory()
        client.event_hooks["response"] = [*client.event_hooks.get("response", []), refuse_foreign_redirects]
        return client

    _http.set_client_factory(factory)
    try:
        yield
    finally:
        _http.set_client_factory(_http.default_client_factory)


def not_a_hub(endpoint: str, repo_id: str) -> NotTheHub:
    return NotTheHub(
        f"{endpoint} answered the listing of {repo_id} in a shape the Hub never uses: it does not answer "
        f"like a Hugging Face hub; {_FIX_ENDPOINT}"
    )


def check_listing(repo_id: str, endpoint: str, commit: str | None, files) -> None:
    """Names, sizes, hashes and the commit of a repo listing must look like the Hub's (RemoteFile items)."""
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise NotTheHub(
            f"{endpoint} listed {repo_id} without a valid commit id ({str(commit)[:50]!r}): it does not answer "
            f"like a Hugging Face hub; {_FIX_ENDPOINT}"
        )
    for f in files:
        if not (isinstance(f.name, str) and _is_size(f.size) and isinstance(f.sha256, str | None)):
            raise not_a_hub(endpoint, repo_id)
        problem = _name_problem(f.name)
        if problem is None and f.size is not None and not 0 <= f.size <= MAX_FILE_BYTES:
            problem = f"a size of {f.size:,} bytes"
        if problem is None and f.sha256 is not None and not _SHA256.fullmatch(f.sha256):
            problem = "a malformed sha256"
        if problem:
            raise NotTheHub(
                f"{endpoint} lists a file in {repo_id} with {problem} ({f.name[:80]!r}): the mirror is "
                f"broken or hostile, nothing was downloaded; {_FIX_ENDPOINT}"
            )


def _is_size(size) -> bool:
    return size is None or (isinstance(size, int) and not isinstance(size, bool))


def _name_problem(name: str) -> str | None:
    if not name or len(name) > 255:
        return "an empty or overlong name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if any(part in ("..", ".") for part in re.split(r"[/\\]", name)):
        return "a '..' path"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "control characters in its name"
    return None
