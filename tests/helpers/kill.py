"""A callback that ends its process with SIGKILL (no handler runs, nothing is flushed by Python) once
training reaches a step; ``+callbacks.kill._target_=helpers.kill.KillAt +callbacks.kill.step=K``."""

from __future__ import annotations

import os
import signal
import time

import pytorch_lightning as pl


class KillAt(pl.Callback):
    def __init__(self, step: int, wait_s: float = 2.5) -> None:
        self.step, self.wait_s = int(step), float(wait_s)

    def on_train_batch_start(self, trainer, *args) -> None:
        # at the start of the step after `step` steps: the checkpoint of step `step` (if due) is on disk;
        # wait_s lets W&B's one-second transaction-log flush happen, as it would on a running job
        if trainer.global_step == self.step:
            time.sleep(self.wait_s)
            os.kill(os.getpid(), signal.SIGKILL)
