"""Code recovery: agreement of recovered raw codes ``[T, 37]`` with the true ones (oracle targets)."""

from __future__ import annotations

import numpy as np
import torch

from voxinv.eval.metrics.common import MetricError, scalar


def code_recovery(
    est_codes: torch.Tensor | np.ndarray,
    true_codes: torch.Tensor | np.ndarray,
    table: torch.Tensor | None = None,
    audio_args=None,
) -> dict[str, float]:
    """Agreement of raw ``[T, 37]`` codes with the ground truth.

    ``code_sem_acc`` / ``code_ac_acc`` / ``code_frame_acc``: exact-match % (semantic column,
    acoustic entries, whole frames); ``code_ac_mae``: mean |level error| of acoustic codes. With the
    audio-code ``table`` (``[rows, dim]``; ``audio_args`` an ``AudioModelArgs``, default the
    release's): ``code_emb_cos`` = mean cosine between the frames' summed embeddings
    (``voices.frame_embeddings`` of model-format codes) and ``code_emb_rel_err`` = mean
    ‖e_est − e_true‖ / ‖e_true‖ — what a voice prompt built from the codes would differ by.
    """
    est = torch.as_tensor(np.asarray(est_codes) if not isinstance(est_codes, torch.Tensor) else est_codes).long()
    true = torch.as_tensor(np.asarray(true_codes) if not isinstance(true_codes, torch.Tensor) else true_codes).long()
    if est.dim() != 2 or est.shape != true.shape:
        raise MetricError(
            f"codes must both be [T, 37] with the same T, got {list(est.shape)} and {list(true.shape)}: "
            "compare a reconstruction with the codes of the same clip"
        )
    ac_err = (est[:, 1:] - true[:, 1:]).abs().double()
    out = {
        "code_sem_acc": 100 * scalar((est[:, 0] == true[:, 0]).double().mean()),
        "code_ac_acc": 100 * scalar((ac_err == 0).double().mean()),
        "code_frame_acc": 100 * scalar((est == true).all(1).double().mean()),
        "code_ac_mae": scalar(ac_err.mean()),
    }
    if table is not None:
        from voxinv.voxtral.codes import to_model
        from voxinv.voxtral.params import AudioModelArgs
        from voxinv.voxtral.voices import frame_embeddings

        args = audio_args or AudioModelArgs()
        e_est = frame_embeddings(to_model(est), table, args)  # [T, dim] fp32
        e_true = frame_embeddings(to_model(true), table, args)
        out["code_emb_cos"] = scalar(torch.nn.functional.cosine_similarity(e_est, e_true, dim=-1).mean())
        out["code_emb_rel_err"] = scalar(((e_est - e_true).norm(dim=-1) / e_true.norm(dim=-1).clamp_min(1e-12)).mean())
    return out
