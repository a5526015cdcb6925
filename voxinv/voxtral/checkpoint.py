"""Resolve a Voxtral model (local directory or Hugging Face repo id) and read its tensors lazily.

A model directory holds ``params.json`` + ``consolidated.safetensors`` (+ ``tekken.json`` and
``voice_embedding/<name>.pt``). Only the tensors a component asks for are read (safetensors
memory-maps the file), so loading the 150 M-parameter codec never touches the 8 GB backbone.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from voxinv.voxtral import DEFAULT_REPO  # noqa: F401  (re-exported: checkpoint.DEFAULT_REPO)
from voxinv.voxtral.params import VoxtralParams

WEIGHTS = "consolidated.safetensors"
PARAMS = "params.json"
TEKKEN = "tekken.json"
VOICE_DIR = "voice_embedding"

HOW_TO_GET = (
    f"download it with `hf download {DEFAULT_REPO} --local-dir DIR` "
    "(accept the CC BY-NC 4.0 license on the model page first) and pass model.path=DIR, "
    "or run `voxinv make-tiny DIR` for a tiny random checkpoint"
)


class CheckpointError(RuntimeError):
    """A model directory or checkpoint is missing, incomplete or inconsistent."""


@contextmanager
def open_safetensors(path: str | os.PathLike) -> Iterator:
    """``safe_open`` whose failure on a truncated/corrupt file is one line naming the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except SafetensorError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt ({first}): delete it and download it again "
            f"(`hf download {DEFAULT_REPO} --local-dir DIR`)"
        ) from e


def load_plain(path: str | os.PathLike):
    """``torch.load`` of a file that may only hold tensors and plain containers (never runs pickled code).

    Raises ``ValueError`` (without torch's "retry with weights_only=False" advice) for anything else.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = next((ln.split("GLOBAL", 1)[1].split()[0] for ln in str(e).splitlines() if "GLOBAL" in ln), None)
        detail = f" (it references {what})" if what else ""
        raise ValueError(
            f"{path} is not a plain tensor file{detail}: voxinv loads only tensors and plain containers "
            "and will not execute code stored in it"
        ) from e


def _looks_like_repo_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


def resolve_model(path_or_id: str | os.PathLike, *, weights: bool = True) -> Path:
    """Return a local model directory for ``path_or_id``.

    A local path must exist and hold ``params.json`` (and the weights when ``weights``). A string
    of the form ``owner/name`` that is not a local path is fetched from the Hugging Face Hub —
    only params, tokenizer, voices and (if ``weights``) the safetensors file; ``HF_HOME`` and
    ``HF_HUB_OFFLINE=1`` are honoured by ``huggingface_hub`` itself.
    """
    p = Path(os.path.expanduser(str(path_or_id)))
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"model path {p} is a file, expected a model directory; {HOW_TO_GET}")
        if not (p / PARAMS).is_file():
            raise CheckpointError(f"{p} has no {PARAMS}: not a Voxtral model directory; {HOW_TO_GET}")
        if weights and not (p / WEIGHTS).is_file():
            raise CheckpointError(f"{p} has no {WEIGHTS} (the model weights); {HOW_TO_GET}")
        return p
    if not _looks_like_repo_id(str(path_or_id)):
        raise CheckpointError(f"model directory {p} does not exist; {HOW_TO_GET}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [PARAMS, TEKKEN, f"{VOICE_DIR}/*"] + ([WEIGHTS] if weights else [])
    try:
        local = snapshot_download(repo_id=str(path_or_id), allow_patterns=patterns)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot fetch {path_or_id} from the Hugging Face Hub ({first}); {HOW_TO_GET}") from e
    return resolve_model(local, weights=weights)


class Checkpoint:
    """A resolved model directory: typed params plus lazy access to its tensors."""

    def __init__(self, path_or_id: str | os.PathLike = DEFAULT_REPO, *, weights: bool = True) -> None:
        self.path = resolve_model(path_or_id, weights=weights)
        self.params = VoxtralParams.from_json(self.path / PARAMS)
        self._names: list[str] | None = None

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS

    def tensor_names(self) -> list[str]:
        if self._names is None:
            if not self.weights_file.is_file():
                raise CheckpointError(f"{self.path} has no {WEIGHTS}; {HOW_TO_GET}")
            with open_safetensors(self.weights_file) as f:
                self._names = list(f.keys())
        return self._names

    def load(
        self,
        prefix: str,
        *,
        dtype: torch.dtype | None = None,
        skip: Iterable[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Tensors whose name starts with ``prefix``, prefix stripped, optionally cast to ``dtype``.

        Names starting with an entry of ``skip`` (after stripping) are not read at all.
        """
        skip = tuple(skip)
        out: dict[str, torch.Tensor] = {}
        with open_safetensors(self.weights_file) as f:
            for name in f.keys():
                if not name.startswith(prefix):
                    continue
                key = name[len(prefix) :]
                if skip and key.startswith(skip):
                    continue
                t = f.get_tensor(name)
                out[key] = t.to(dtype) if dtype is not None else t
        if not out:
            raise CheckpointError(
                f"{self.weights_file} has no tensors under '{prefix}': not a Voxtral TTS checkpoint "
                f"or truncated download; {HOW_TO_GET}"
            )
        return out

    def audio_table(self) -> torch.Tensor:
        """The audio-code embedding table ``[9088, dim]`` (the only backbone tensor voices need)."""
        t = self.load("mm_audio_embeddings.audio_codebook_embeddings.").get("embeddings.weight")
        expected = (self.params.audio.audio_table_rows, self.params.backbone.dim)
        if t is None or tuple(t.shape) != expected:
            got = None if t is None else tuple(t.shape)
            raise CheckpointError(
                f"audio-code table has shape {got}, expected {expected}: checkpoint and params.json disagree"
            )
        return t


def check_state(
    expected: dict[str, torch.Size],
    loaded: dict[str, torch.Tensor],
    *,
    where: str,
    optional: Iterable[str] = (),
) -> None:
    """Raise one clear error listing missing / unexpected / mis-shaped tensors (first few of each).

    Names starting with an entry of ``optional`` may be missing (e.g. the codec encoder).
    """
    optional = tuple(optional)
    missing = [k for k in expected if k not in loaded and not (optional and k.startswith(optional))]
    unexpected = [k for k in loaded if k not in expected]
    bad = [
        f"{k} {tuple(loaded[k].shape)}≠{tuple(expected[k])}"
        for k in expected
        if k in loaded and tuple(loaded[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown (e.g. {', '.join(unexpected[:3])})")
    if bad:
        problems.append(f"{len(bad)} with wrong shape (e.g. {'; '.join(bad[:3])})")
    if problems:
        raise CheckpointError(
            f"{where}: checkpoint does not match params.json: {'; '.join(problems)}. "
            "Is params.json from the same release as consolidated.safetensors?"
        )
    for k, t in loaded.items():
        if not t.dtype.is_floating_point:
            raise CheckpointError(f"{where}: tensor {k} has dtype {t.dtype}, expected a float dtype (bf16)")
