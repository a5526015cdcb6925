"""Learn the missing codec encoder against the frozen decoder (amortised initialisation).

python -m voxinv.train_encoder model=proxy data.sources=[data/encoder/train/manifest.json] \\
    val.sources=[data/encoder/eval/manifest.json]

The §11 encoder (:class:`~voxinv.voxtral.codec.CodecEncoder`, weight-normed convs as in the release)
maps random speech crops to a latent; the quantizer snaps it to *valid codes* with straight-through
gradients (semantic: nearest table entry, or a softmax over distances; acoustic: tanh → 21 FSQ
levels); the frozen decoder of ``model`` decodes them, and the inversion loss suite (``loss=…``)
compares the result with the crop. Only the encoder learns. Outputs in the run directory:
``encoder.safetensors`` (release names, loadable with ``load_codec(ckpt, encoder_path=…)`` and
``init=encoder init.path=…``), ``metrics.json``, ``checkpoints/last.ckpt`` (``resume=true``),
``media/`` (validation audio with the CSV logger; W&B gets audio panels).

Modules, bottom up: :mod:`.data` (recordings from audio lists, folders or files; random and fixed
crops), :mod:`.quantize` (the straight-through quantizer), :mod:`.network` (the trainable encoder: build,
data-dependent init, export), :mod:`.module` (the LightningModule and its callbacks), :mod:`.train`
(the run and the Hydra entry point; ``python -m voxinv.train_encoder`` is its alias).
"""
