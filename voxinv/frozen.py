"""A plain holder for what a LightningModule uses but must not own."""

from __future__ import annotations


class Frozen:
    """Attributes set from keywords (``Frozen(codec=codec, terms=terms)``). Lightning neither registers
    nor checkpoints what is inside: a frozen decoder or loss models held here stay out of the module's
    parameters, ``state_dict``, optimizer and ``.to()`` (the module moves them itself)."""

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)
