"""Windowed optimisation: which frames a step scores, and that a window's audio is the full decode's."""

from __future__ import annotations

import torch

from voxinv.invert.window import decode_latent_windowed, window_at, window_of


def test_windows_cover_the_clip_round_robin():
    assert window_at(0, 10, None) is None and window_at(3, 10, 10) is None  # fits: the whole clip
    spans = [window_at(s, 10, 4) for s in range(4)]
    assert spans == [(0, 4), (4, 8), (6, 10), (0, 4)]  # the last window ends at the clip's end
    assert set().union(*(range(a, b) for a, b in spans)) == set(range(10))


def test_window_audio_equals_the_full_decode(codec):
    g = torch.Generator().manual_seed(0)
    T, spf = 60, codec.samples_per_frame
    codes = torch.cat(
        [torch.randint(0, 8192, (1, 1, T), generator=g), torch.randint(0, 21, (1, 36, T), generator=g)], 1
    )
    latent = codec.quantizer.decode(codes, torch.float32)  # [1, 292, T]
    with torch.no_grad():
        full = codec.decode_latent(latent)[:, 0]  # [1, T · spf]
        target = full[0].clone()
        for step in range(3):
            lat, x, cut = window_of(step, latent, target, 20, 25)
            y = codec.decode_latent(lat)[:, 0, cut:]
            a, b = window_at(step, T, 20)
            assert lat.shape[-1] == b - max(0, a - 25) and x.numel() == (b - a) * spf
            torch.testing.assert_close(y[0], full[0, a * spf : b * spf], rtol=0, atol=1e-5)
            torch.testing.assert_close(x, target[a * spf : b * spf], rtol=0, atol=0)
        torch.testing.assert_close(
            decode_latent_windowed(codec, latent, chunk=20, context=25), codec.decode_latent(latent), rtol=0, atol=1e-5
        )


def test_a_windowed_run_exports_whole_clip_codes(tmp_path, voxinv_cache, monkeypatch):
    from hydra import compose, initialize_config_dir

    import voxinv.run as R
    from voxinv.voxtral.codes import load_codes

    monkeypatch.setenv("VOXINV_CACHE", str(voxinv_cache))
    o = ["model=tiny", "target=synthetic", "target.n_frames=5", "device=cpu", "init=random", "steps=3"]
    o += ["eval_every=1", "eval.which=[]", "trainer.enable_progress_bar=false", "window.frames=2", "window.context=1"]
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=o)
    m = R.run(cfg, tmp_path / "run")
    assert m["steps"] == 3 and m["target"]["frames"] == 5 and m["stopped"] is None
    assert load_codes(tmp_path / "run" / "codes.safetensors").shape == (5, 37)
    assert [h["step"] for h in m["history"]] == [0, 1, 2, 3]  # evaluations score the whole clip
