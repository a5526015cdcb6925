"""voxinv: voice cloning for Voxtral-4B-TTS by inverting its codec decoder."""

__version__ = "0.1.0"
