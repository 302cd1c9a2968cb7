"""Where an imported checkpoint comes from: a local directory, or ``hf:ORG/REPO[@REV]`` via the Hugging Face cache.

``hf:`` goes through ``huggingface_hub``: the local cache first (``HF_HUB_CACHE``, else ``HF_HOME/hub``,
read when called), so a populated cache works offline; only when the revision is not cached and
downloads are allowed (``HF_HUB_OFFLINE`` unset) are the files a language model needs downloaded.

>>> src = resolve("hf:Qwen/Qwen3-0.6B@main")
>>> src.path, src.lineage        # the snapshot folder; {"source": "hf:Qwen/Qwen3-0.6B", "commit": ...}
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput, NotFound

# what an LM import reads from a Hub repository (never pickled *.bin weights)
PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "additional_chat_templates/*"]
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HASH_BLOCK = 16 << 20


@dataclass(frozen=True)
class Source:
    """A checkpoint directory on this machine and what lineage records about where it came from."""

    path: str
    lineage: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> str:
    """The Hugging Face hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(source: str) -> Source:
    """A local checkpoint directory for ``source`` (``PATH`` or ``hf:ORG/REPO[@REV]``); one-line errors."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("give a checkpoint: --from PATH (a Hugging Face directory) or --from hf:ORG/REPO[@REV]")
    source = source.strip()
    if source.startswith("hf:"):
        return _from_hub(source[3:])
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.isdir(path):
        raise NotFound(f"{source} is not a directory: point --from at a Hugging Face checkpoint folder or hf:ORG/REPO")
    return Source(path, {"source": path})


def _from_hub(spec: str) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = spec.partition("@")
    if not _REPO.fullmatch(repo):
        raise InvalidInput(f"hf:{spec}: write the repository as hf:ORG/REPO or hf:ORG/REPO@REVISION")
    where = cache_dir()
    try:
        path = snapshot_download(repo, revision=revision or None, cache_dir=where, local_files_only=True)
    except LocalEntryNotFoundError:
        if offline():
            raise NotFound(
                f"hf:{spec} is not in the Hugging Face cache {where} and downloads are off (HF_HUB_OFFLINE=1): "
                f"run `hf download {repo}` where there is internet, or import a local directory"
            ) from None
        try:
            path = snapshot_download(repo, revision=revision or None, cache_dir=where, allow_patterns=PATTERNS)
        except Exception as exc:  # network, auth, unknown repo: one line for the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NotFound(f"cannot download hf:{spec}: {first}") from None
    except Exception as exc:  # a malformed cache or revision
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"cannot read hf:{spec} from the Hugging Face cache {where}: {first}") from None
    return Source(
        str(path),
        {"source": f"hf:{repo}", "repo": repo, "revision": revision or "main", "commit": os.path.basename(path)},
    )


def sha256_file(path: str) -> str:
    """sha256 of a file read in blocks (shards can be many GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


__all__ = ["Source", "resolve", "cache_dir", "offline", "sha256_file", "PATTERNS"]
