"""Hydra configuration: every option of every group composes, resolves and names only things the
code knows; the experiments carry their documented values; command-line overrides apply."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from voxinv.paths import CONF_DIR
from voxinv.voxtral.device import DTYPES

CONF = Path(CONF_DIR)


def _options() -> list[tuple[str, str]]:
    """(group, option) for every ``conf/<group>/<option>.yaml``; ``_``-files are shared bases."""
    out = []
    for f in sorted(CONF.rglob("*.yaml")):
        if f.parent == CONF or f.name.startswith("_"):
            continue
        out.append((f.parent.relative_to(CONF).as_posix(), f.stem))
    return out


OPTIONS = _options()


def _compose(*overrides: str, hydra_cfg: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_cfg)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("VOXINV_CACHE", str(tmp_path / "cache"))  # model.cache_dir resolves without ~


def _loss_with(terms: set[str]) -> str | None:
    """A loss option whose weights hold all of ``terms`` (schedule ramps need their term)."""
    for group, name in OPTIONS:
        if group == "loss" and terms <= set(OmegaConf.load(CONF / "loss" / f"{name}.yaml").get("weights", {})):
            return name
    return None


def _check(cfg: DictConfig) -> None:
    """The composed config resolves and every kind/name in it is one the code accepts."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from voxinv.invert import schedule
    from voxinv.invert.losses import Balancer, term_nodes
    from voxinv.invert.params import SEMANTIC_KINDS

    cfg.paths.output_dir = "/runs/x"  # the run directory: voxinv.run sets it (Hydra's output dir)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    _check_targets(cfg)
    for key in ("seed", "steps", "batch", "device", "eval_every", "checkpoint_every", "resume", "eval", "export"):
        assert key in cfg, key
    assert cfg.device in ("auto", "cpu", "cuda") or str(cfg.device).startswith("cuda:")
    assert cfg.model.dtype in DTYPES
    assert cfg.model.name in ("tiny", "proxy") or cfg.model.path  # generated models need no path
    assert cfg.target.kind in ("file", "preset", "synthetic", "manifest")
    assert cfg.codes.semantic in SEMANTIC_KINDS
    assert cfg.init.kind in ("random", "warm_start", "coord_descent", "encoder")
    assert cfg.optim.optimizer._target_.startswith("torch.optim.") and cfg.optim.optimizer.lr == cfg.optim.lr
    assert cfg.checkpoint_every == cfg.callbacks.checkpoint.every_n_train_steps
    terms = term_nodes(cfg.loss)  # every loss.<name> node with a _target_: its settings are constructor arguments
    assert set(cfg.loss.weights) <= set(terms), cfg.loss.weights
    assert all(w >= 0 for w in cfg.loss.weights.values())
    Balancer(**cfg.loss.balancer.kwargs)
    for name, node in terms.items():
        assert set(node) - {"_target_"} <= set(inspect.signature(get_object(node._target_)).parameters), name
    trainer = get_object(cfg.trainer._target_)  # conf/trainer: built by voxinv.trainer.build_trainer
    assert issubclass(trainer, pl.Trainer) and set(cfg.trainer) - {"_target_"} <= set(
        inspect.signature(trainer).parameters
    )
    n = int(cfg.steps)
    lr_factor, temperature = instantiate(cfg.schedule.lr), instantiate(cfg.schedule.temperature)
    for step in (0, 1, n // 2, n - 1, n):
        assert 0 < lr_factor(step, n) <= 1
        assert temperature(step, n) > 0
        w = schedule.loss_weights(step, cfg.loss.weights, cfg.schedule.ramps)
        assert set(w) == set(cfg.loss.weights)


def _check_targets(node, where: str = "cfg") -> None:
    """Every ``_target_`` imports, and its node sets only parameters the target accepts."""
    from hydra.utils import get_object

    if isinstance(node, DictConfig):
        if "_target_" in node:
            obj = get_object(node._target_)
            params = inspect.signature(obj).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                extra = {k for k in node if not k.startswith("_")} - set(params)
                assert not extra, f"{where}: {node._target_} takes no {sorted(extra)}"
        for k in node:
            if k != "hydra":
                _check_targets(node._get_node(k), f"{where}.{k}")


def test_every_option_is_listed():
    groups = {g for g, _ in OPTIONS}
    assert {
        "callbacks",
        "codes",
        "debug",
        "experiment",
        "init",
        "logger",
        "loss",
        "model",
        "optim",
        "paths",
        "schedule",
        "target",
        "trainer",
    } <= groups
    assert ("loss", "_base_") not in OPTIONS


@pytest.mark.parametrize("group,name", OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_option_composes(group, name):
    overrides = [f"{group}={name}"]
    if group == "schedule":  # a ramp needs its term in the loss weights
        ramps = set(OmegaConf.load(CONF / "schedule" / f"{name}.yaml").get("ramps") or {})
        if ramps - set(_compose().loss.weights):
            loss = _loss_with(ramps)
            assert loss, f"schedule={name} ramps {sorted(ramps)}: no loss option has those terms"
            overrides.append(f"loss={loss}")
    if group.startswith("hydra/"):  # launcher/sweeper options extend a plugin's config (optional extras)
        try:
            cfg = _compose(*overrides, hydra_cfg=True)
        except MissingConfigException as e:
            bases = [d for d in OmegaConf.load(CONF / group / f"{name}.yaml").get("defaults", []) if d != "_self_"]
            if not any(f"'{group}/{b}'" in str(e) for b in bases):
                raise  # not the plugin's config that is missing
            pytest.skip(f"{group}={name} needs its Hydra plugin: {str(e).splitlines()[0]}")
    else:
        cfg = _compose(*overrides)
    _check(cfg)
    if group in ("experiment", "debug"):  # @package _global_ deltas
        return
    # the option's own file is what ends up in the group (base files fill the rest)
    own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{name}.yaml"))
    own.pop("defaults", None)
    path = group.replace("/", ".")
    if group == "logger" and name in cfg.logger:  # one package per logger (logger.<name>): several compose
        path = f"logger.{name}"
    node = OmegaConf.to_container(OmegaConf.select(cfg, path), resolve=True)
    _assert_within(own, node, f"{group}={name}")


def _assert_within(own, node, where: str) -> None:
    """Every value the option file sets is in the composed node (interpolations left out)."""
    if isinstance(own, dict):
        for k, v in own.items():
            assert k in node, f"{where}.{k} missing"
            _assert_within(v, node[k], f"{where}.{k}")
    elif not (isinstance(own, str) and ("${" in own or own == "???")):  # interpolated / set at run time
        assert own == node, f"{where}: {own!r} != {node!r}"


def test_ramp_without_its_term_is_an_error():
    from voxinv.invert import schedule

    cfg = _compose("schedule=spk_late", "loss=stft+mel")
    with pytest.raises(ValueError, match="spk"):
        schedule.loss_weights(0, cfg.loss.weights, cfg.schedule.ramps)


def test_defaults():
    cfg = _compose()
    assert cfg.model.name == "voxtral" and cfg.model.path == "mistralai/Voxtral-4B-TTS-2603"
    assert cfg.target.kind == "file" and cfg.target.path is None and cfg.init.kind == "random"
    assert cfg.codes.semantic == "softmax_ste" and cfg.logger.csv._target_ == "voxinv.invert.loggers.CSVLogger"
    assert set(cfg.callbacks) == {"checkpoint", "eval_logger", "progress_bar", "early_stop"}
    assert dict(cfg.loss.weights) == {"stft": 1.0, "mel": 1.0}
    assert _compose("target=synthetic").target.seed == cfg.seed  # ${seed}
    assert cfg.resume is False and cfg.export.register is None


def test_experiment_oracle():
    cfg = _compose("experiment=oracle")
    _check(cfg)
    assert (cfg.steps, cfg.eval_every, cfg.device) == (100, 25, "cpu")
    assert cfg.model.name == "tiny" and cfg.target.kind == "synthetic" and cfg.target.n_frames == 12


def test_experiment_seed_recipe():
    cfg = _compose("experiment=seed_recipe")
    _check(cfg)
    assert cfg.steps == 5000
    assert cfg.codes.semantic == "gumbel" and cfg.init.kind == "random"
    assert dict(cfg.loss.weights) == {"l1": 0.5, "stft": 1.0, "mel": 1.0, "mfcc": 1.0, "spk": 0.5}
    assert len(cfg.loss.stft.fft_sizes) == 8 and list(cfg.loss.mel.fft_sizes) == [2048]
    t = cfg.schedule.temperature
    assert (t._target_, t.start, t.end, t.decay) == ("voxinv.invert.schedule.exp_decay", 1.0, 0.5, 0.995)
    lr = cfg.schedule.lr
    assert (lr._target_, lr.warmup, lr.min_ratio) == ("voxinv.invert.schedule.warmup_cosine", 0, 0.01)
    assert (cfg.optim.optimizer._target_, cfg.optim.optimizer.lr, cfg.optim.grad_clip) == ("torch.optim.Adam", 0.1, 1.0)


def test_debug_fast():
    """2 frames, 3 steps, no coordinate descent; whatever the model."""
    for model in ("tiny", "voxtral"):
        cfg = _compose(f"model={model}", "debug=fast")
        _check(cfg)
        assert (cfg.target.kind, cfg.target.n_frames, cfg.steps, cfg.init.kind) == ("synthetic", 2, 3, "random")
        assert cfg.model.name == model and cfg.eval.which == []


def test_experiment_overridable_on_the_command_line():
    cfg = _compose("experiment=oracle", "steps=7", "target.n_frames=3")
    assert (cfg.steps, cfg.target.n_frames, cfg.device) == (7, 3, "cpu")


def test_overrides_apply(tmp_path):
    from voxinv.voxtral.models import model_path

    cfg = _compose(f"model.path={tmp_path}/m", "steps=17", "seed=5", f"target.path={tmp_path}/me.wav")
    assert cfg.model.path == f"{tmp_path}/m" and model_path(cfg.model) == f"{tmp_path}/m"
    assert cfg.steps == 17 and cfg.seed == 5 and cfg.target.path == f"{tmp_path}/me.wav"
    assert _compose("target=synthetic", "seed=5").target.seed == 5  # the synthetic target follows seed
    cfg = _compose("model=voxtral", f"model.path={tmp_path}/real")
    assert cfg.model.name == "voxtral" and model_path(cfg.model) == f"{tmp_path}/real"
    assert model_path(_compose("model=voxtral").model) == "mistralai/Voxtral-4B-TTS-2603"
    cfg = _compose(f"target.path={tmp_path}/me.wav", "target.max_seconds=3")  # target=file is the default
    assert cfg.target.kind == "file" and cfg.target.path == f"{tmp_path}/me.wav" and cfg.target.max_seconds == 3


def test_tiny_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXINV_CACHE", str(tmp_path / "elsewhere"))
    assert _compose("model=tiny").model.cache_dir == str(tmp_path / "elsewhere")
