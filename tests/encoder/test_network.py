"""``voxinv.encoder.network``: the trainable encoder (release weight-norm names), its data-dependent
init (no index collapse), the export, and the committed learned proxy encoder still loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from voxinv.encoder.network import build_encoder, data_init, save_encoder
from voxinv.voxtral.codec import ENCODER_PREFIXES, load_encoder_tensors

REPO = Path(__file__).resolve().parents[2]
ASSET = REPO / "assets" / "proxy" / "learned_encoder.safetensors"


def _low_rank_table(v: int, d: int, rank: int, seed: int) -> torch.Tensor:
    """A trained-codebook-like table: ``v`` entries in a ``rank``-dim subspace of ``d`` dims
    (decaying spectrum, off-centre mean), as the proxy's (8192 entries, effective rank ≈ 9 of 256)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g))[0]  # [d, rank]
    coords = torch.randn(v, rank, generator=g) * (0.8 ** torch.arange(rank))
    return 0.5 * coords @ basis.T + 0.03 * torch.randn(d, generator=g) + 0.005 * torch.randn(v, d, generator=g)


def test_data_init_does_not_collapse_the_semantic_codes(codec):
    """Index collapse at init (the CPU proxy run's cause): a random encoder scaled to the table's std
    emits an isotropic latent, mostly off a low-rank table's span, so every frame snaps to a handful
    of hub entries. ``data_init`` colours it to the table's second moment: the codes of one batch
    spread over many entries. Fails with the std-only init (measured: 81 distinct of 256 frames; coloured: 249)."""
    table = _low_rank_table(8192, 256, 8, seed=0)
    crops = 0.05 * torch.randn(16, 16 * 1920, generator=torch.Generator().manual_seed(1))  # [16, N]
    enc = build_encoder(codec.args, None, 0)
    data_init(enc, crops, table, 0.6)
    with torch.no_grad():
        z = enc(crops[:, None])[:, :256].transpose(1, 2).reshape(-1, 256)  # [256 frames, 256]
    codes = torch.cdist(z, table).argmin(-1)
    assert codes.unique().numel() >= 160, codes.unique().numel()
    # the latent concentrates in the table's 8-dim span (measured 38%; isotropic: 8 / 256 = 3%)
    span = torch.linalg.svd(table - table.mean(0), full_matrices=False).Vh[:8]  # [8, 256]
    centred = z - table.mean(0)
    assert (centred @ span.T).pow(2).sum() > 0.25 * centred.pow(2).sum()
    # the acoustic channels land at the requested std (the tanh's working range)
    with torch.no_grad():
        assert enc(crops[:, None])[:, 256:].std() == pytest.approx(0.6, rel=1e-3)


def test_seeded_build_export_and_reload(codec, tmp_path):
    a, b = build_encoder(codec.args, None, 5), build_encoder(codec.args, None, 5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    path = save_encoder(a, tmp_path / "encoder.safetensors")
    with safe_open(str(path), "pt") as f:
        names = list(f.keys())
        assert f.metadata()["producer"] == "voxinv.train_encoder"
    assert names and all(n.startswith(ENCODER_PREFIXES) for n in names)
    assert "input_proj.conv.parametrizations.weight.original0" in names  # release weight-norm names
    c = build_encoder(codec.args, str(path), 0)  # another seed, then the file's weights
    x = 0.05 * torch.randn(1, 1, 4 * 1920, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), c(x))


def test_init_that_does_not_fit_is_one_clear_error(codec, tmp_path):
    from safetensors.torch import save_file

    save_file({"input_proj.conv.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="does not fit this model's encoder"):
        build_encoder(codec.args, str(tmp_path / "other.safetensors"), 0)


def test_committed_learned_proxy_encoder_loads():
    """assets/proxy/learned_encoder.safetensors (exported by an earlier train_encoder) fits the proxy's
    encoder architecture exactly, as built here, and encodes to finite latents of the release shape."""
    if not ASSET.is_file():
        pytest.skip("assets/proxy/learned_encoder.safetensors is not in this checkout")
    from voxinv.voxtral.params import CodecArgs, _from_dict
    from voxinv.voxtral.proxy import codec_args

    args = _from_dict(CodecArgs, codec_args(ASSET.parent))
    enc = build_encoder(args, str(ASSET), 0)  # strict: a missing or unknown tensor raises
    assert set(enc.state_dict()) == set(load_encoder_tensors(str(ASSET)))
    with torch.no_grad():
        z = enc(0.05 * torch.randn(1, 1, 2 * 1920, generator=torch.Generator().manual_seed(0)))
    assert z.shape == (1, 292, 2) and torch.isfinite(z).all()
