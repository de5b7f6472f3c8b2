"""A hub model's published training checkpoints: which revisions, which step and how many tokens each
is, and an identity for each that the hub gives without downloading the weights.

- `list_revisions`: the repository's branches (``list_repo_refs``; offline, the refs the cache holds)
  that name a training step (Pythia ``step1000``, stanford-crfm ``checkpoint-400``, OLMo
  ``step1000-tokens4B``), by step; `pick_log_spaced` chooses `HubConfig.max_revisions` of them,
  log-spaced over steps, the first and last always (``--revisions auto``).
- `tokens_seen`: the tokens a checkpoint was trained on, where the suite publishes it: Pythia, 2,097,152
  per step (1024 sequences of 2048 tokens); a number with its unit in the name (``tokens4B``); or
  `HubConfig.tokens_per_step`; else unknown (None).
- `revision_identity`: the revision's commit and a hash of its weight files, the same hash
  `induction.loading.hf_dirs.weights_sha256` gives for the downloaded snapshot, computed from the
  hub's listing (the sha256 of LFS files; small files are fetched and hashed), so a checkpoint whose
  result is cached is not downloaded again and two revisions with the same weights share one result.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Sequence

from induction.common.checks import check_min
from induction.common.fileio import file_sha256, induction_cache, write_json_atomic
from induction.loading.hf_dirs import safetensors_files
from induction.loading.hub import (
    PICKLE_PATTERNS,
    SAFETENSORS_PATTERNS,
    HubError,
    cached_commit,
    delete_revision,
    download_patterns,
    fetch,
    hub_cache,
    hub_endpoint,
    hub_error,
    hub_mode,
    hub_offline,
    hub_token,
    official_name,
    remote_revision,
)
from induction.loading.native import ModelLoadError, read_json
from induction.loading.pickled import PICKLE_INDEX, pickle_weight_files

AUTO = "auto"
PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences x 2048 tokens (Biderman et al. 2023)
SUITE_TOKENS_PER_STEP = ((re.compile(r"^EleutherAI/pythia-"), PYTHIA_TOKENS_PER_STEP),)
TOKENS_IN_NAME = re.compile(r"tokens?[-_]?(\d+(?:\.\d+)?)([KMBT])(?![A-Za-z])", re.IGNORECASE)
UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
STEP_IN_NAME = re.compile(r"(?:^|[^A-Za-z])step[-_]?(\d+)", re.IGNORECASE)
SMALL_FILE = 50 * 2**20  # a weight file without an LFS hash up to this size is fetched to hash it


@dataclass
class HubConfig:
    """How a hub model's published checkpoints are reached (`induction track NAME --revisions ...`).

    Attributes:
        offline: never contact the hub; every revision must be in the Hugging Face cache (also when
            ``HF_HUB_OFFLINE=1``).
        allow_pickle: read checkpoints whose weights exist only as ``pytorch_model*.bin``, with torch's
            restricted unpickler (`induction.loading.pickled`); refused otherwise.
        keep_weights: keep each downloaded revision in the Hugging Face cache (the Hugging Face way);
            False deletes it once scored, so the disk holds one revision at a time.
        max_revisions: with revisions ``auto``, how many of the repository's step branches to score,
            log-spaced over steps, the first and last always (12).
        tokens_per_step: tokens per training step, for suites whose tokens are not known (Pythia's
            and names such as OLMo's ``stepN-tokensNB`` are); None: as published, else unknown.
    """

    offline: bool = False
    allow_pickle: bool = False
    keep_weights: bool = True
    max_revisions: int = 12
    tokens_per_step: int | None = None

    def __post_init__(self) -> None:
        check_min("max_revisions", self.max_revisions, 2)
        if self.tokens_per_step is not None:
            check_min("tokens_per_step", self.tokens_per_step, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"offline": self.offline, "allow_pickle": self.allow_pickle, "keep_weights": self.keep_weights,
                "max_revisions": self.max_revisions, "tokens_per_step": self.tokens_per_step}


def revision_step(name: str) -> int | None:
    """The training step a revision names: ``step1000``, ``stage1-step1000-tokens4B``, ``checkpoint-400``
    (a trailing number); None when it names none (``main``)."""
    match = STEP_IN_NAME.search(name) or re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else None


def tokens_seen(repo: str, revision: str, step: int | None, tokens_per_step: int | None = None) -> int | None:
    """The tokens the checkpoint was trained on (module docstring), or None when unknown."""
    match = TOKENS_IN_NAME.search(revision)
    if match:
        return int(round(float(match.group(1)) * UNITS[match.group(2).upper()]))
    if step is None:
        return None
    if tokens_per_step is not None:
        return step * tokens_per_step
    for pattern, per_step in SUITE_TOKENS_PER_STEP:
        if pattern.search(official_name(repo)):
            return step * per_step
    return None


def list_revisions(repo: str, offline: bool = False, known: Sequence[str] = ()) -> list[str]:
    """The branches of `repo` that name a training step, by step (ties: by name).

    Online: the hub's branch list (``list_repo_refs``); offline: the branches the Hugging Face cache
    has fetched (its ``refs/`` folder) and the `known` ones (those a track has scored, `read_record`).

    Raises:
        HubError: the hub's errors (one line), or no branch names a step.
    """
    repo = official_name(repo)
    if hub_offline(offline):
        from huggingface_hub.file_download import repo_folder_name

        refs = hub_cache() / repo_folder_name(repo_id=repo, repo_type="model") / "refs"
        names = [str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()] if refs.is_dir() else []
        names = sorted(set(names) | set(known))
    else:
        try:
            with hub_mode(False):
                names = _branch_names(repo)
        except Exception as exc:
            raise hub_error(exc, repo, "main") from None
    stepped = sorted((s, n) for n in names if (s := revision_step(n)) is not None)
    if not stepped:
        where = "in the Hugging Face cache (offline)" if hub_offline(offline) else f"on {hub_endpoint()}"
        raise HubError(f"{repo} has no branch naming a training step {where} (branches: "
                       f"{', '.join(sorted(names)[:6]) or 'none'}); name the revisions to score")
    return [n for _, n in stepped]


def pick_log_spaced(revisions: Sequence[str], n: int) -> list[str]:
    """`n` of `revisions` (sorted by step), log-spaced over step + 1, the first and last always; all of
    them when there are no more than `n`. Training moves fastest early, so a log axis samples the
    formation of induction heads (Olsson et al. 2022) where a linear one would skip it."""
    check_min("max_revisions", n, 2)
    if len(revisions) <= n:
        return list(revisions)
    x = [math.log1p(revision_step(r) or 0) for r in revisions]
    chosen: set[int] = {0, len(revisions) - 1}
    for k in range(1, n - 1):
        target = x[0] + (x[-1] - x[0]) * k / (n - 1)
        free = [i for i in range(len(revisions)) if i not in chosen]
        chosen.add(min(free, key=lambda i: (abs(x[i] - target), i)))
    return [revisions[i] for i in sorted(chosen)]


def resolve_revisions(repo: str, revisions: Sequence[str] | str, hub: HubConfig,
                      known: Sequence[str] = ()) -> list[str]:
    """`revisions` as given, or with ``auto`` the log-spaced pick of the repository's step branches
    (offline: of those in the cache and the `known` ones)."""
    if revisions == AUTO or list(revisions) == [AUTO]:
        return pick_log_spaced(list_revisions(repo, hub.offline, known), hub.max_revisions)
    return list(revisions)


RECORD_FILE = "revisions.json"


def read_record(directory: Path | None) -> dict[str, dict[str, Any]]:
    """The identities `track` last saw for a hub model's revisions ({revision: identity}), kept beside
    its cached results, so that offline, after ``keep_weights=False`` deleted the weights, a rerun
    still finds its results (as the Hugging Face cache's ``refs/`` map a branch to its last commit)."""
    path = None if directory is None else directory / RECORD_FILE
    if path is None or not path.is_file():
        return {}
    try:
        data = read_json(path, "revision record")
    except ModelLoadError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def write_record(directory: Path | None, identities: dict[str, dict[str, Any]]) -> None:
    if directory is not None:
        write_json_atomic(directory / RECORD_FILE, {**read_record(directory), **identities})


def revision_identity(repo: str, revision: str, hub: HubConfig,
                      recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"repo", "commit", "weights_sha256"} of one revision, without downloading its weights where the
    hub lists their sha256 (module docstring); offline, from the cached snapshot, else `recorded`
    (what an earlier track saw, `read_record`).

    Raises:
        HubError: one line (offline and not cached, gated, missing, no connection, pickles refused).
    """
    repo = official_name(repo)
    if hub_offline(hub.offline):
        try:
            folder = fetch(repo, revision, offline=True, allow_pickle=hub.allow_pickle, progress=False)
        except HubError:
            if recorded is not None:
                return recorded
            raise
        return {"repo": repo, "commit": folder.name, "weights_sha256": local_weights_sha256(folder, hub.allow_pickle)}
    remote = remote_revision(repo, revision)
    patterns = download_patterns(remote, hub.allow_pickle)
    weights = PICKLE_PATTERNS if PICKLE_PATTERNS[0] in patterns else SAFETENSORS_PATTERNS
    names = [n for n in remote.files if any(fnmatch(n, p) for p in weights)]
    index = next((n for n in names if n.endswith(".index.json")), None)
    single = [n for n in names if n in ("model.safetensors", "pytorch_model.bin")]
    if single:
        ordered = single[:1]
    else:  # as `safetensors_files`: the index, then the shards it names, by name
        data = read_json(_hub_file(repo, remote.commit, index), "weights index")
        ordered = [index, *sorted(set(map(str, (data.get("weight_map") or {}).values())))]
    digest = hashlib.sha256()
    for name in ordered:
        if name not in remote.files:
            raise HubError(f"{repo}@{revision}: its index names {name}, which the revision does not have")
        sha = remote.files[name].sha256
        if sha is None:
            if remote.files[name].size > SMALL_FILE:
                raise HubError(f"{repo}@{revision}: the hub lists no sha256 for {name}")
            sha = file_sha256(_hub_file(repo, remote.commit, name))
        digest.update(name.encode() + b"\0" + sha.encode())
    return {"repo": repo, "commit": remote.commit, "weights_sha256": digest.hexdigest()}


def local_weights_sha256(folder: Path, allow_pickle: bool = False) -> str:
    """`induction.loading.hf_dirs.weights_sha256` of a model directory, its pickled weight files
    counted when it has no safetensors and `allow_pickle` (hashed, never opened)."""
    try:
        files = safetensors_files(folder)
    except ModelLoadError:
        files = pickle_weight_files(folder) if allow_pickle else []
        if not files:
            raise
        if (folder / PICKLE_INDEX).is_file():
            files = [folder / PICKLE_INDEX, *files]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def hub_track_dir(repo: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `track` caches a hub model's per-revision results: `cache_dir`, else
    ``$INDUCTION_CACHE/track/<org>--<name>/``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return induction_cache() / "track" / official_name(repo).replace("/", "--")


def release_revision(repo: str, revision: str) -> int:
    """Delete a scored revision from the Hugging Face cache (`HubConfig.keep_weights` False); the bytes freed."""
    repo = official_name(repo)
    commit = cached_commit(repo, revision)
    return 0 if commit is None else delete_revision(repo, commit)


def _branch_names(repo: str) -> list[str]:
    """The repository's branch names (``list_repo_refs``; read from the JSON directly when a hub
    leaves out the parts of the answer huggingface_hub also requires, such as ``converts``)."""
    try:
        return [b.name for b in _api().list_repo_refs(repo).branches]
    except KeyError:
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        response = get_session().get(f"{hub_endpoint()}/api/models/{repo}/refs",
                                     headers=build_hf_headers(token=hub_token()))
        hf_raise_for_status(response)
        return [str(b["name"]) for b in response.json().get("branches", [])]


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=hub_token())


def _hub_file(repo: str, commit: str, name: str | None) -> Path:
    """One small file of a revision, through the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    if name is None:
        raise HubError(f"{repo}@{commit} has sharded weights but no index")
    try:
        with hub_mode(False):
            return Path(hf_hub_download(repo, name, revision=commit, cache_dir=str(hub_cache()), endpoint=hub_endpoint(),
                                        token=hub_token()))
    except Exception as exc:
        raise hub_error(exc, repo, commit) from None
