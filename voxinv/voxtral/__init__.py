"""The released Voxtral-4B-TTS model: checkpoint, codec, codes, voices, backbone, flow, TTS."""

DEFAULT_REPO = (
    "mistralai/Voxtral-4B-TTS-2603"  # Hugging Face repo id of the release (torch-free: the CLI parser reads it)
)
