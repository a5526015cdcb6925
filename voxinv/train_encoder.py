"""``python -m voxinv.train_encoder …`` (and ``voxinv train-encoder``): the encoder trainer's entry point,
kept under its documented name. The trainer is the package :mod:`voxinv.encoder`."""

from voxinv.encoder.train import main

if __name__ == "__main__":
    main()
