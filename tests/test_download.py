"""edge.setup.download against a real HTTP server (FakeHub) with the real huggingface_hub client."""

import hashlib
import os
import random
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError

from edge.errors import DownloadError, ModelFileError, UsageError
from edge.setup import download
from edge.setup.download import fetch_file, import_local, list_remote_files

REPO = "ggml-org/gemma-test-GGUF"
MODEL = "gemma-test-Q4_K_M.gguf"
SIZE = 3 * 1024 * 1024 + 12345  # a few MB, not a multiple of any chunk size
GOOD_TOKEN = "hf_valid_test_token"  # FakeHub's default valid token


@pytest.fixture
def model_bytes() -> bytes:
    return random.Random(20260101).randbytes(SIZE)


@pytest.fixture
def repo(fake_hub, model_bytes, tmp_path):  # noqa: F811
    """A repo with one LFS model file streamed from disk and one small git file."""
    src = tmp_path / "served" / MODEL
    src.parent.mkdir()
    src.write_bytes(model_bytes)
    return fake_hub.add_repo(REPO, {MODEL: src, "README.md": b"# test model\n"})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(repo, **kw) -> Path:
    kw.setdefault("progress", False)
    return fetch_file(REPO, MODEL, revision=repo.commit, **kw)


def cache_root() -> Path:
    return Path(os.environ["HF_HOME"]) / "hub" / "models--ggml-org--gemma-test-GGUF"


def leftovers() -> list[str]:
    """Every file (not folder) under the repo's cache folder, relative to it."""
    root = cache_root()
    files = root.rglob("*") if root.exists() else []
    return sorted(str(p.relative_to(root)) for p in files if p.is_file() or p.is_symlink())


# ---- listing -----------------------------------------------------------------------------------
def test_listing_reports_commit_sizes_and_lfs_sha256(repo, model_bytes):
    listing = list_remote_files(REPO)

    assert listing.repo_id == REPO
    assert listing.commit == repo.commit
    model = listing.get(MODEL)
    assert (model.size, model.sha256) == (SIZE, sha256(model_bytes))
    readme = listing.get("README.md")
    assert readme.size == len(b"# test model\n") and readme.sha256 is None  # kept in git, not LFS


def test_listing_at_a_pinned_commit_and_an_unknown_repo(repo, fake_hub):  # noqa: F811
    assert list_remote_files(REPO, revision=repo.commit).commit == repo.commit
    with pytest.raises(DownloadError, match="Repository ggml-org/nope was not found") as err:
        list_remote_files("ggml-org/nope")
    assert isinstance(err.value.__cause__, RepositoryNotFoundError)


def test_fake_hub_tree_listing_matches_what_the_real_client_expects(repo, fake_hub, model_bytes):  # noqa: F811
    # Not edge code: checks the tree endpoint other modules (catalog) may list repos with.
    tree = {f.path: f for f in HfApi(endpoint=fake_hub.endpoint).list_repo_tree(REPO, revision=repo.commit)}
    assert (tree[MODEL].size, tree[MODEL].lfs.sha256) == (SIZE, sha256(model_bytes))
    assert tree["README.md"].lfs is None


# ---- fetching ----------------------------------------------------------------------------------
def test_fetch_verifies_and_returns_the_cached_path(repo, fake_hub, model_bytes):  # noqa: F811
    path = fetch(repo, expected_sha256=sha256(model_bytes), expected_size=SIZE, progress=True)

    assert path == cache_root() / "snapshots" / repo.commit / MODEL  # the HF cache under conftest's HF_HOME
    assert path.is_symlink() and path.resolve().name == sha256(model_bytes)  # blob named by content hash
    assert path.read_bytes() == model_bytes
    gets = fake_hub.requests_for(MODEL, method="GET")
    assert len(gets) == 1 and gets[0].range is None and fake_hub.bytes_served(MODEL) == SIZE
    assert not [name for name in leftovers() if name.endswith(".incomplete")]


def test_second_fetch_makes_no_request_at_all(repo, fake_hub, model_bytes):  # noqa: F811
    first = fetch(repo, expected_sha256=sha256(model_bytes), expected_size=SIZE)
    fake_hub.reset_log()

    assert fetch(repo, expected_sha256=sha256(model_bytes), expected_size=SIZE) == first
    assert fake_hub.requests == []


def test_token_from_hf_token_is_sent_and_opens_a_gated_repo(fake_hub, model_bytes, monkeypatch):  # noqa: F811
    gated = fake_hub.add_repo(REPO, {MODEL: model_bytes}, gated=True, authorized_tokens=(GOOD_TOKEN,))
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)

    assert fetch(gated).read_bytes() == model_bytes
    assert {r.authorization for r in fake_hub.requests} == {f"Bearer {GOOD_TOKEN}"}


def test_lfs_redirect_is_followed(model_bytes, monkeypatch):
    from fake_hub import FakeHub

    with FakeHub(redirect_lfs=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        served = hub.add_repo(REPO, {MODEL: model_bytes})
        assert fetch(served).read_bytes() == model_bytes
        assert [r.status for r in hub.requests_for(MODEL, method="HEAD")][0] == 302
        assert all(r.path.startswith("/_lfs/") for r in hub.requests_for(MODEL, method="GET"))


# huggingface_hub writes a download in chunks of this size: after a dropped connection it resumes
# from the last whole chunk it wrote, so resume tests need files of a few chunks.
CHUNK = hf_constants.DOWNLOAD_CHUNK_SIZE
BIG = "gemma-test-Q8_0.gguf"
BIG_SIZE = 2 * CHUNK + 777_777


@pytest.fixture
def big_bytes() -> bytes:
    return random.Random(99).randbytes(BIG_SIZE)


@pytest.fixture
def big_repo(fake_hub, big_bytes, tmp_path):  # noqa: F811
    src = tmp_path / "served-big" / BIG
    src.parent.mkdir()
    src.write_bytes(big_bytes)
    return fake_hub.add_repo(REPO, {BIG: src})


def fetch_big(big_repo, big_bytes) -> Path:
    return fetch_file(REPO, BIG, revision=big_repo.commit, expected_sha256=sha256(big_bytes), progress=False)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dropped_connection_is_resumed_with_a_range_request(big_repo, fake_hub, fast_retries, big_bytes, seed):  # noqa: F811
    offset = random.Random(seed).randrange(CHUNK + 1, BIG_SIZE - 1)
    fake_hub.drop_after(offset, file=BIG, times=1)

    path = fetch_big(big_repo, big_bytes)

    assert path.read_bytes() == big_bytes
    first, second = fake_hub.requests_for(BIG, method="GET")
    assert first.fault == "drop" and first.body_bytes == offset
    resumed_at = offset // CHUNK * CHUNK  # the last whole chunk written before the drop
    assert second.range == f"bytes={resumed_at}-" and second.status == 206
    assert second.body_bytes == BIG_SIZE - resumed_at


def test_interrupted_download_resumes_on_the_next_run(big_repo, fake_hub, fast_retries, big_bytes):  # noqa: F811
    offset = random.Random(7).randrange(CHUNK + 1, BIG_SIZE - 1)
    fake_hub.drop_after(offset, file=BIG, times=1)
    fake_hub.drop_after(0, file=BIG, times=None)  # then the network is gone for good

    with pytest.raises(DownloadError, match="stopped at .* run the same command again to resume"):
        fetch_big(big_repo, big_bytes)
    assert not (cache_root() / "snapshots").exists()
    [partial] = [cache_root() / n for n in leftovers() if n.endswith(".incomplete")]
    kept = partial.stat().st_size
    assert kept == offset // CHUNK * CHUNK > 0
    assert partial.read_bytes() == big_bytes[:kept]

    fake_hub.clear_faults()
    fake_hub.reset_log()
    path = fetch_big(big_repo, big_bytes)

    assert path.read_bytes() == big_bytes
    [get] = fake_hub.requests_for(BIG, method="GET")
    assert get.range == f"bytes={kept}-" and get.body_bytes == BIG_SIZE - kept
    assert not partial.exists()


@pytest.mark.parametrize("pinned_sha", [True, False], ids=["catalog-sha", "hub-lfs-sha"])
def test_wrong_bytes_are_rejected_and_nothing_is_left(repo, fake_hub, model_bytes, pinned_sha):  # noqa: F811
    fake_hub.corrupt(file=MODEL)

    with pytest.raises(DownloadError, match="failed verification .*sha256.*bad copy was deleted"):
        fetch(repo, expected_sha256=sha256(model_bytes) if pinned_sha else None)

    assert fake_hub.bytes_served(MODEL) == SIZE
    assert leftovers() == []  # no blob, no snapshot link, no partial
    assert not (cache_root() / "snapshots" / repo.commit / MODEL).exists()


def test_damaged_cached_file_is_removed_and_fetched_again(repo, fake_hub, model_bytes):  # noqa: F811
    path = fetch(repo, expected_sha256=sha256(model_bytes), expected_size=SIZE)
    path.resolve().write_bytes(model_bytes[: SIZE // 2])  # e.g. a disk problem truncated it
    fake_hub.reset_log()

    again = fetch(repo, expected_sha256=sha256(model_bytes), expected_size=SIZE)

    assert again.read_bytes() == model_bytes
    assert fake_hub.bytes_served(MODEL) == SIZE


def test_damaged_cached_file_offline_is_removed_with_its_link(repo, fake_hub, model_bytes):  # noqa: F811
    path = fetch(repo, expected_size=SIZE)
    blob = path.resolve()
    blob.write_bytes(b"x" * 10)
    fake_hub.reset_log()

    with pytest.raises(DownloadError, match="was damaged .*has been removed"):
        fetch(repo, expected_size=SIZE, offline=True)
    assert not blob.exists() and not os.path.lexists(path)
    assert fake_hub.requests == []


# ---- failures map to one clear line -------------------------------------------------------------
def test_bad_token_401(repo, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(DownloadError, match=r"rejected your token \(401.*hf auth login.*HF_TOKEN") as err:
        fetch(repo)
    assert isinstance(err.value.__cause__, HfHubHTTPError)


@pytest.mark.parametrize("token", [None, GOOD_TOKEN], ids=["anonymous-401", "not-authorized-403"])
def test_gated_repo(fake_hub, model_bytes, monkeypatch, token):  # noqa: F811
    gated = fake_hub.add_repo(REPO, {MODEL: model_bytes}, gated=True)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    advice = r"gated repo: accept its terms at http://127\.0\.0\.1.*hf auth login"
    with pytest.raises(DownloadError, match=advice) as err:
        fetch(gated)
    assert isinstance(err.value.__cause__, GatedRepoError)
    assert err.value.__cause__.response.status_code == (403 if token else 401)


def test_injected_gated_error_on_listing(repo, fake_hub):  # noqa: F811
    fake_hub.fail("gated", repo=REPO)
    with pytest.raises(DownloadError, match="gated repo"):
        list_remote_files(REPO)


def test_missing_repo_404(fake_hub, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)  # with a token the hub says 404, not 401
    with pytest.raises(DownloadError, match="Repository ggml-org/missing was not found on http") as err:
        fetch_file("ggml-org/missing", MODEL, revision="a" * 40, progress=False)
    assert err.value.__cause__.response.status_code == 404


def test_missing_file_404_names_the_files_that_exist(repo):
    listed = r"gemma-test-Q8_0\.gguf is not in .*files there: gemma-test-Q4_K_M\.gguf, README\.md"
    with pytest.raises(DownloadError, match=listed) as err:
        fetch_file(REPO, "gemma-test-Q8_0.gguf", revision=repo.commit, progress=False)
    assert isinstance(err.value.__cause__, RemoteEntryNotFoundError)


def test_server_error_500_then_a_one_shot_fault_heals(repo, fake_hub, model_bytes):  # noqa: F811
    fake_hub.fail("server_error", file=MODEL, times=1)
    with pytest.raises(DownloadError, match="failed with HTTP 500 .*try again later.*HF_ENDPOINT"):
        fetch(repo)
    assert fake_hub.bytes_served(MODEL) == 0

    assert fetch(repo).read_bytes() == model_bytes  # the fault was one-shot


def test_no_network(repo, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(DownloadError, match="Cannot reach the hub at .*--offline.*HF_ENDPOINT"):
        fetch(repo)


def test_stale_pin_is_caught_before_any_transfer(repo, fake_hub):  # noqa: F811
    with pytest.raises(DownloadError, match="the pinned entry is stale"):
        fetch(repo, expected_size=SIZE + 1)
    with pytest.raises(DownloadError, match="the pinned entry is stale"):
        fetch(repo, expected_sha256="0" * 64)
    assert fake_hub.requests_for(MODEL, method="GET") == []


def test_revision_must_be_a_commit(repo):
    with pytest.raises(UsageError, match="40-character commit"):
        fetch_file(REPO, MODEL, revision="main")


# ---- offline -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_with_nothing_cached(repo, fake_hub, monkeypatch, how):  # noqa: F811
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not in the local cache .*offline.*--gguf PATH"):
        fetch(repo, offline=(how == "flag"))
    assert fake_hub.requests == []


def test_offline_with_a_cached_file_needs_no_network(repo, fake_hub, model_bytes):  # noqa: F811
    online = fetch(repo, expected_sha256=sha256(model_bytes))
    fake_hub.reset_log()
    fake_hub.fail("server_error")  # anything that did reach the hub would fail

    assert fetch(repo, expected_sha256=sha256(model_bytes), offline=True) == online
    assert fake_hub.requests == []


# ---- disk space --------------------------------------------------------------------------------
def test_not_enough_disk_space_says_needed_and_free(repo, fake_hub, monkeypatch):  # noqa: F811
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 10**6, free=10**6))
    with pytest.raises(DownloadError, match=r"needs 3\.2 MB but .* has only 1\.0 MB free"):
        fetch(repo)
    assert fake_hub.requests_for(MODEL, method="GET") == []


# ---- import_local ------------------------------------------------------------------------------
def test_import_local_copies_atomically(tmp_path, model_bytes):
    src = tmp_path / "mine.gguf"
    src.write_bytes(model_bytes)
    seen = []

    out = import_local(src, tmp_path / "models", validate=lambda p: seen.append((p.name, p.read_bytes())))

    assert out == tmp_path / "models" / "mine.gguf" and out.read_bytes() == model_bytes
    assert os.listdir(tmp_path / "models") == ["mine.gguf"]  # no temp file left behind
    [(checked_name, checked_bytes)] = seen
    assert checked_name.endswith(".mine.gguf") and checked_name != "mine.gguf"  # validated before the rename
    assert checked_bytes == model_bytes


def test_import_local_hardlinks_when_asked(tmp_path):
    src = tmp_path / "mine.gguf"
    src.write_bytes(b"GGUF" + bytes(100))
    out = import_local(src, tmp_path / "models", link=True)
    assert os.path.samefile(out, src)


def test_import_local_failing_validation_leaves_nothing(tmp_path):
    src = tmp_path / "bad.gguf"
    src.write_bytes(b"not a gguf")

    def reject(path):
        raise ModelFileError(f"{path.name} is not GGUF")

    with pytest.raises(ModelFileError, match="is not GGUF"):
        import_local(src, tmp_path / "models", validate=reject)
    assert os.listdir(tmp_path / "models") == []


def test_import_local_interrupted_copy_leaves_no_partial(tmp_path, monkeypatch, model_bytes):
    src = tmp_path / "mine.gguf"
    src.write_bytes(model_bytes)
    (tmp_path / "models").mkdir()

    def half_then_fail(fin, fout, length=0):
        fout.write(fin.read(SIZE // 2))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download.shutil, "copyfileobj", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        import_local(src, tmp_path / "models")
    assert os.listdir(tmp_path / "models") == []


def test_import_local_missing_source(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        import_local(tmp_path / "nope.gguf", tmp_path / "models")
