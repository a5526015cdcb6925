"""Fixtures of the encoder tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from encoder_common import voice


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Two training speakers (folders) and one held-out speaker, two 1.5 s recordings each."""
    root = tmp_path_factory.mktemp("enc_audio")
    for spk, f0 in (("train_a", 110.0), ("train_b", 210.0), ("heldout", 150.0)):
        (root / spk).mkdir()
        for i in range(2):
            voice(root / spk / f"{i}.wav", f0 * (1 + 0.05 * i), 1.5, seed=i)
    return root
