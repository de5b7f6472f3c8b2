"""Hugging Face hub names, fetched the ecosystem's way and then read as local directories.

A hub name (``gpt2``, ``EleutherAI/pythia-160m``) at a revision is downloaded on first use through
`huggingface_hub.snapshot_download` into the standard Hugging Face cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``), and only the files the toolkit reads: config, safetensors weights and their
index, tokenizer files (and, when the caller allows pickles, ``pytorch_model*.bin``). The snapshot
folder is then loaded like any local model directory (`induction.loading.models.load_hf_directory`),
so the same strict reading applies. The hub is asked nothing when `offline` is set or
``HF_HUB_OFFLINE=1`` (read at call time); then a model that is not cached fails at once, saying how
to fetch it.

A snapshot is used only when every file the model needs is in it and whole: huggingface_hub writes
each file as ``blobs/<etag>.incomplete`` and links it into the snapshot only once complete, and
`check_snapshot` also checks each safetensors file's size against its header and every shard its
index names (an offline `snapshot_download` of a partly fetched revision returns the folder anyway).

Every failure is one `HubError` line: a gated or private model without a token, a missing repository
or revision, a lost connection, a full disk, a revision that is not cached while offline.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from induction.loading.hf_dirs import (
    MissingShardError,
    safetensors_files,
    safetensors_size_problem,
)
from induction.loading.native import CONFIG_FILE, ModelLoadError, one_line
from induction.loading.pickled import PICKLE_INDEX, PICKLE_WEIGHTS, pickle_weight_files

DEFAULT_REVISION = "main"
CONFIG_PATTERNS = (CONFIG_FILE, "generation_config.json")
SAFETENSORS_PATTERNS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
PICKLE_PATTERNS = (PICKLE_WEIGHTS, PICKLE_INDEX, "pytorch_model-*-of-*.bin")
TOKENIZER_PATTERNS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model")
TRUE_VALUES = ("1", "ON", "YES", "TRUE")


class HubError(ModelLoadError):
    """A hub model that cannot be fetched or used (one line saying why and what to do)."""


def hub_offline(offline: bool = False) -> bool:
    """Whether the hub is off limits: `offline`, else ``HF_HUB_OFFLINE`` as it is now (not as it was
    when huggingface_hub was imported), else huggingface_hub's own setting."""
    if offline:
        return True
    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in TRUE_VALUES
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache() -> Path:
    """The Hugging Face hub cache, from the environment now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` now, else huggingface_hub's (https://huggingface.co)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """``HF_TOKEN`` now; None lets huggingface_hub use the token saved by ``hf auth login``."""
    return os.environ.get("HF_TOKEN") or None


def hub_api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=hub_token())


def official_name(name: str) -> str:
    """TransformerLens' deprecated aliases (``gpt2-small``) as the hub names they stand for."""
    from transformer_lens.tools.model_registry.registry_io import resolve_model_alias

    return resolve_model_alias(name) or name


def fetch_command(repo: str, revision: str | None) -> str:
    """The shell command that puts `repo` at `revision` into the cache."""
    rev = "" if revision in (None, DEFAULT_REVISION) else f" --revision {revision}"
    return f"hf download {repo}{rev} --include '*.json' '*.safetensors' '*.txt' '*.model'"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub revision: its size and, for LFS files, its sha256 (None otherwise)."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class RemoteRevision:
    """A hub revision as the hub lists it: the commit it resolves to, and its files."""

    repo: str
    revision: str
    commit: str
    files: dict[str, RemoteFile]


def remote_revision(repo: str, revision: str | None = None) -> RemoteRevision:
    """The commit `revision` of `repo` resolves to, and its files (one listing; nothing downloaded).

    Raises:
        HubError: one line (offline, gated, missing repository or revision, no connection).
    """
    from huggingface_hub.hf_api import RepoFile

    rev = revision or DEFAULT_REVISION
    if hub_offline():
        raise offline_error(repo, rev)
    with _hub_online():
        try:
            api = hub_api()
            info = api.model_info(repo, revision=rev)
            files = {f.path: RemoteFile(f.path, int(f.size or 0), f.lfs.sha256 if f.lfs is not None else None)
                     for f in api.list_repo_tree(repo, revision=info.sha, recursive=True) if isinstance(f, RepoFile)}
        except Exception as exc:  # huggingface_hub and httpx raise many types; `hub_error` sorts them
            raise hub_error(exc, repo, rev) from None
    return RemoteRevision(repo, rev, str(info.sha), files)


def download_patterns(remote: RemoteRevision, allow_pickle: bool = False) -> list[str]:
    """What to download of a revision: config, tokenizer and its safetensors weights, or, when it has
    none and `allow_pickle`, its ``pytorch_model*.bin`` weights (never any other pickle).

    Raises:
        HubError: no weights the toolkit reads (naming the pickles and the opt-in, if that is why).
    """
    names = list(remote.files)
    has = lambda patterns: [n for n in names if any(fnmatch(n, p) for p in patterns)]  # noqa: E731
    base = [*CONFIG_PATTERNS, *TOKENIZER_PATTERNS]
    where = f"{remote.repo}@{remote.revision}"
    if CONFIG_FILE not in remote.files:
        raise HubError(f"{where} has no {CONFIG_FILE}: not a transformers model")
    if has(SAFETENSORS_PATTERNS):
        return [*base, *SAFETENSORS_PATTERNS]
    pickles = has(PICKLE_PATTERNS)
    if pickles and allow_pickle:
        return [*base, *PICKLE_PATTERNS]
    if pickles:
        raise HubError(f"{where} publishes its weights only as pickles ({', '.join(sorted(pickles)[:3])}), which are "
                       "not read by default; allow_pickle=True reads them with torch's restricted unpickler "
                       "(torch.load(weights_only=True))")
    raise HubError(f"{where} has no safetensors weights (model.safetensors or model.safetensors.index.json)")


def fetch(repo: str, revision: str | None = None, *, offline: bool = False, allow_pickle: bool = False,
          progress: bool = True) -> Path:
    """`repo` at `revision` as a local snapshot folder in the Hugging Face cache, downloaded if needed.

    Args:
        repo: a hub name (``gpt2``, ``EleutherAI/pythia-160m``).
        revision: a branch, tag or commit (default ``main``).
        offline: never contact the hub (as ``HF_HUB_OFFLINE=1``): the revision must be cached.
        allow_pickle: fetch ``pytorch_model*.bin`` weights when the revision has no safetensors.
        progress: show huggingface_hub's download progress bars.

    Raises:
        HubError: one line (module docstring).
    """
    from huggingface_hub import snapshot_download

    rev = revision or DEFAULT_REVISION
    off = hub_offline(offline)
    if off:
        with _hub_offline(), _progress_bars(progress):
            try:  # only config.json is asked for: `check_snapshot` decides whether the rest is there
                folder = snapshot_download(repo, revision=rev, cache_dir=str(hub_cache()), local_files_only=True,
                                           allow_patterns=[CONFIG_FILE])
            except Exception as exc:
                raise hub_error(exc, repo, rev, offline=True) from None
    else:
        remote = remote_revision(repo, rev)
        patterns = download_patterns(remote, allow_pickle)
        with _hub_online(), _progress_bars(progress):
            try:
                folder = snapshot_download(repo, revision=rev, cache_dir=str(hub_cache()), endpoint=hub_endpoint(),
                                           token=hub_token(), allow_patterns=patterns)
            except Exception as exc:
                raise hub_error(exc, repo, rev) from None
    folder = Path(folder)
    check_snapshot(folder, repo, rev, allow_pickle, off)
    return folder


def check_snapshot(folder: Path, repo: str, revision: str, allow_pickle: bool = False, offline: bool = False) -> None:
    """Refuse a snapshot folder that lacks a file the model needs, or holds a cut-short one.

    Raises:
        HubError: naming the missing or short file and how to fetch the revision whole.
    """
    where = f"{repo}@{revision}"
    again = (f"fetch it with `{fetch_command(repo, revision)}` or run with the hub online" if offline
             else "run again to resume the download")
    if not (folder / CONFIG_FILE).is_file():
        raise HubError(f"{where} in the Hugging Face cache ({folder}) has no {CONFIG_FILE}; {again}")
    try:
        files = safetensors_files(folder)
    except MissingShardError as exc:
        raise HubError(f"{where} in the Hugging Face cache is incomplete: {exc.shard} is missing; {again}") from None
    except ModelLoadError:
        pickles = pickle_weight_files(folder) if allow_pickle else []
        if pickles:
            return
        if any(folder.glob("pytorch_model*.bin")):
            raise HubError(f"{where} has its weights only as pickles (pytorch_model*.bin), which are not read by "
                           "default; allow_pickle=True reads them with torch.load(weights_only=True)") from None
        raise HubError(f"{where} in the Hugging Face cache ({folder}) has no weights; {again}") from None
    for path in files:
        problem = path.suffix == ".safetensors" and safetensors_size_problem(path)
        if problem:
            raise HubError(f"{where} in the Hugging Face cache is incomplete: {problem}; {again}")


def offline_error(repo: str, revision: str) -> HubError:
    why = "HF_HUB_OFFLINE=1" if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in TRUE_VALUES else "offline=True"
    return HubError(f"{repo}@{revision} is not in the Hugging Face cache ({hub_cache()}) and the hub is offline "
                    f"({why}); fetch it with `{fetch_command(repo, revision)}`, or run with the hub online")


def hub_error(exc: BaseException, repo: str, revision: str, offline: bool = False) -> HubError:
    """One line for what huggingface_hub (or the network, or the disk) raised while fetching."""
    from huggingface_hub import errors

    where = f"{repo}@{revision}"
    page = f"{hub_endpoint()}/{repo}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return HubError(f"the disk is full while downloading {where} into {hub_cache()}: free space there, or point "
                        "HF_HUB_CACHE at a disk with room (nothing half-written is used)")
    if offline or isinstance(exc, errors.OfflineModeIsEnabled):
        return offline_error(repo, revision)
    if isinstance(exc, errors.GatedRepoError):
        return _no_access(repo, page, "gated")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{repo} has no revision {revision!r} on {hub_endpoint()} (its branches: "
                        f"huggingface_hub.list_repo_refs({repo!r}))")
    if isinstance(exc, errors.RepositoryNotFoundError):  # the hub answers so for private repositories too
        token = "HF_TOKEN" if hub_token() is None else "a token in HF_TOKEN with access to it"
        return HubError(f"no model {repo!r} on {hub_endpoint()} (a private one needs {token})")
    if status in (401, 403):
        return _no_access(repo, page, "gated or private")
    if _is_connection_error(exc):
        return HubError(f"the connection to {hub_endpoint()} failed while fetching {where} ({one_line(exc)}); run "
                        "again to resume, or work from the Hugging Face cache with offline=True (a half-downloaded "
                        "file is never used)")
    return HubError(f"cannot fetch {where} from {hub_endpoint()}: {one_line(exc)}")


def _no_access(repo: str, page: str, what: str) -> HubError:
    if hub_token() is None:
        return HubError(f"{repo} is {what}: accept its terms at {page} and set HF_TOKEN to a token of that "
                        "account (or run `hf auth login`)")
    return HubError(f"{repo} is {what} and the token in HF_TOKEN has no access to it: accept its terms at "
                    f"{page} with that account")


def _is_connection_error(exc: BaseException) -> bool:
    from huggingface_hub import errors

    seen: BaseException | None = exc
    while seen is not None:  # huggingface_hub wraps the network's error (LocalEntryNotFoundError from ...)
        module = type(seen).__module__.split(".")[0]
        if isinstance(seen, (ConnectionError, TimeoutError)) or module in ("httpx", "httpx2", "httpcore", "h11"):
            return True
        if isinstance(seen, errors.LocalEntryNotFoundError) and "internet connection" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def hub_mode(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline switch set for the block as `hub_offline` decided: it reads its
    constant at call time, but set it from the environment only once, at import."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def _hub_online() -> contextlib.AbstractContextManager[None]:
    return hub_mode(False)


def _hub_offline() -> contextlib.AbstractContextManager[None]:
    return hub_mode(True)


@contextlib.contextmanager
def _progress_bars(on: bool) -> Iterator[None]:
    """huggingface_hub's download bars off for the block unless `on` (and not turned off process-wide),
    and its log warnings ("Trying to resume download...") off: what went wrong reaches the caller
    as one `HubError` line."""
    import logging

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_off = are_progress_bars_disabled()
    if not on:
        disable_progress_bars()
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        hub_logger.setLevel(level)
        (disable_progress_bars if was_off else enable_progress_bars)()


# ---- the cache: revisions it holds, and freeing them ------------------------------------------------

def cached_commit(repo: str, revision: str) -> str | None:
    """The commit the cache maps `revision` of `repo` to (a branch's ``refs/`` file), or None."""
    from huggingface_hub.file_download import repo_folder_name

    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    ref = hub_cache() / repo_folder_name(repo_id=repo, repo_type="model") / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def delete_revision(repo: str, commit: str) -> int:
    """Delete one cached revision (by commit) of `repo` with huggingface_hub's cache API; blobs that
    another cached revision still links are kept. Returns the bytes freed (0 when it was not cached)."""
    from huggingface_hub import scan_cache_dir

    cache = hub_cache()
    if not cache.is_dir():
        return 0
    info = scan_cache_dir(cache)
    hashes = [rev.commit_hash for r in info.repos if r.repo_id == repo and r.repo_type == "model"
              for rev in r.revisions if rev.commit_hash == commit]
    if not hashes:
        return 0
    strategy = info.delete_revisions(*hashes)
    strategy.execute()
    return int(strategy.expected_freed_size)
