"""What a training run is: `TrainConfig`, and the named presets as plain data (`train --preset NAME`)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from . import checkpoint, data, writers
from .augment import AugmentConfig
from .corpus import CorpusConfig

NO_CORPUS = {"collections": [], "styles": 0, "negatives": 0}  # MNIST alone


@dataclass
class TrainConfig:
    model: str = "ours"
    model_args: dict = field(default_factory=dict)
    epochs: int = 40  # length of the learning-rate schedule
    # Train only the first N epochs of that schedule: validation accuracy peaks while a one-cycle schedule's
    # learning rate is still well above zero, and falls as it anneals
    # (docs/experiments/network-and-schedule.md).
    stop_after: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"  # 'sgd' (nesterov, one-cycle) or 'adam' (the original Keras recipe)
    lr: float = 0.08  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    ema_decay: float = 0.999  # 0 disables the weight average
    # Before each validation, recompute the averaged weights' batch-norm statistics on this many training inputs
    # (a fixed sample, not augmented); validation, best.pt and export then use them. 0 keeps the averaged ones.
    bn_images: int = 0
    val_fraction: float = 0.1
    # The validation split has its own seed, fixed: runs with another --seed are still chosen on the same images.
    split_seed: int = 0
    limit_train: int | None = None  # use only the first N training images (smoke tests)
    extra_data: str | None = None  # NPZ of extra examples (images, labels), e.g. `digitrecognizer feedback export`
    extra_repeat: int = 20  # each extra example is seen this many times per epoch: a few dozen among 54,000
    init_weights: str | None = None  # start from these weights (model.pt or a checkpoint) to fine-tune
    # Outlier exposure (Hendrycks et al., 2019): this many rendered scribbles per digit in each batch, trained
    # towards equal probabilities for all ten digits, so that what is not a digit gets low confidence and stands
    # out from digits. 0 trains on digits alone.
    outliers: float = 0.0
    outlier_weight: float = 0.5  # weight of the scribbles' loss next to the digits'
    seed: int = 0
    threads: int | None = None
    # Also keep each epoch's evaluated (averaged) weights as epochs/NNN.pt, to study weight averaging.
    keep_epochs: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Digits by other writers, synthetic writing styles and non-digits added to MNIST's (none by default).
    corpus: CorpusConfig = field(default_factory=lambda: CorpusConfig(**NO_CORPUS))

    def split(self, train_full: data.MnistSplit) -> tuple[data.MnistSplit, data.MnistSplit]:
        """(training, validation) parts of the MNIST training set, as every run of this config holds them out:
        training, export and the benchmarks that choose on validation all take the split from here."""
        return data.train_val_split(train_full, self.val_fraction, self.split_seed)

    def __post_init__(self) -> None:
        if not 1 <= self.last_epoch <= self.epochs:
            raise ValueError(f"--stop-after {self.stop_after}: give an epoch from 1 to the schedule's {self.epochs}")
        if not 0 <= self.outliers <= 4:
            raise ValueError(f"--outliers {self.outliers}: give a share of each batch between 0 and 4 (e.g. 0.25)")

    @property
    def last_epoch(self) -> int:
        return self.stop_after or self.epochs

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config as checkpoints and cards record it; fields a record predates take their defaults. Fields this
        version does not know are refused: a run made with a setting this code cannot repeat is not another run."""
        d = dict(d)
        unknown = _unknown_fields(d, cls) + _unknown_fields(d.get("augment", {}), AugmentConfig, "augment.") + \
            _unknown_fields(d.get("corpus", {}), CorpusConfig, "corpus.")
        if unknown:
            raise ValueError(f"the run records settings this version of digitrecognizer does not know "
                             f"({', '.join(unknown)}): use the version that trained it")
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        d["corpus"] = CorpusConfig(**d.get("corpus", NO_CORPUS))
        return cls(**d)


def config_of(saved: dict, path: Path) -> TrainConfig:
    """The config a checkpoint read from `path` records; one with settings this version does not know is refused
    naming the file."""
    try:
        return TrainConfig.from_dict(saved["config"])
    except ValueError as err:
        raise checkpoint.CheckpointError(f"{path}: {err}") from err


def _unknown_fields(record: dict, kind: type, prefix: str = "") -> list[str]:
    return [prefix + name for name in sorted(set(record) - {f.name for f in fields(kind)})]


# Named recipes. Flags given on the command line override them; the choices behind each are in
# docs/experiments/. Valid padding (Deotte's Kaggle CNN) halves the work per image of the 'same'-padded
# network at the same validation accuracy.
PRESETS: dict[str, dict] = {
    # The shipped model: MNIST's training digits, one canvas rendering of each digit of the other writers'
    # collections, synthetic writing styles (a third of them as a low-rate tablet records them), and non-digits
    # for the eleventh output. The elastic wobble is gentler
    # than the augmentation's default: a stronger one makes more training digits unreadable.
    "default": {
        "epochs": 45, "stop_after": 36, "augment": {"elastic_px": 0.5}, "seed": 1, "bn_images": 20_000,
        "model_args": {"width": 32, "padding": "valid", "classes": 11},
        "corpus": {"collections": list(writers.COLLECTIONS), "renderings": 1, "styles": 16_000, "tablet_share": 0.35,
                   "negatives": 16_000},
    },
    # The same network on MNIST alone, with its own schedule.
    "mnist": {"epochs": 45, "stop_after": 36, "model_args": {"width": 32, "padding": "valid"},
              "augment": {"elastic_px": 0.5}, "seed": 1},
    # The original project's Keras model and recipe (Adam, no augmentation), for side-by-side comparison.
    "seed": {
        "model": "seed", "epochs": 15, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
        "label_smoothing": 0.0, "ema_decay": 0.0, "val_fraction": 0.15,
        "augment": {k.name: 0.0 for k in fields(AugmentConfig)},
    },
    # A network with a quarter of the default's multiply-adds (width 16), trained longer, for batch throughput.
    "compact": {"epochs": 90, "model_args": {"width": 16, "padding": "valid"}},
    # Teach a model a user's handwriting: a few epochs from --init-weights (which sets the network), with --extra-data.
    "finetune": {"epochs": 3, "lr": 0.01},
    # A minute-long run to check that everything works end to end.
    "quick": {"epochs": 2, "limit_train": 5000, "model_args": {"width": 16, "hidden": 64}},
}


def preset_config(name: str, **overrides) -> TrainConfig:
    """The preset's config with `overrides` (None: keep the preset's); `exclude` leaves collections out and
    `augment` changes some of the preset's augmentation settings, keeping the rest."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    values = {**asdict(TrainConfig()), **copy.deepcopy(PRESETS[name])}  # a config never aliases its preset
    values["augment"] = {**asdict(AugmentConfig()), **PRESETS[name].get("augment", {})}
    values["corpus"] = {**asdict(TrainConfig().corpus), **PRESETS[name].get("corpus", {})}
    if overrides.get("epochs") is not None and overrides.get("stop_after") is None:
        values["stop_after"] = None  # the preset's stop belongs to its own schedule: a new length is trained whole
    same_model = overrides.get("model") in (None, values["model"])
    for key, value in overrides.items():
        if key == "model_args" and value is not None and same_model:
            value = {**values["model_args"], **value}  # --width keeps the preset's other model settings
        if key == "exclude":
            values["corpus"]["collections"] = _without(values["corpus"]["collections"], value or [])
        elif key == "augment" and value is not None:
            values["augment"] = {**values["augment"], **_known_augment(value)}  # the preset's other settings stay
        elif value is not None:
            values[key] = value
    return TrainConfig.from_dict(values)


AUGMENT_SHARES = ("crisp", "square")  # settings that are shares of each batch


def parse_augment(pairs: list[str]) -> dict:
    """`["square=0.2", "square_labels=[1,7]"]` (as `--augment` takes them) as {"square": 0.2, "square_labels": [1, 7]};
    the values are checked when a preset takes them."""
    settings = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        try:
            if not (sep and name.strip()):
                raise ValueError
            settings[name.strip()] = json.loads(text)
        except ValueError as err:
            raise ValueError(f"--augment {pair}: give NAME=VALUE, the value a number, null or a JSON list "
                             "such as [1,7]") from err
    return settings


def _known_augment(settings: dict) -> dict:
    unknown = _unknown_fields(settings, AugmentConfig)
    if unknown:
        raise ValueError(f"unknown augmentation setting {', '.join(unknown)}: choose from "
                         f"{', '.join(f.name for f in fields(AugmentConfig))}")
    for name, value in settings.items():
        if name == "square_labels":
            fine = value is None or (isinstance(value, list) and value and all(type(v) is int and 0 <= v <= 9
                                                                                for v in value))
            wanted = "null or a list of digits"
        else:
            top = 1 if name in AUGMENT_SHARES else math.inf
            fine = type(value) in (int, float) and 0 <= value <= top and math.isfinite(value)
            wanted = "a share from 0 to 1" if name in AUGMENT_SHARES else "a finite number, 0 or more"
        if not fine:
            raise ValueError(f"augmentation setting {name}={value!r}: give {wanted}")
    return settings


def _without(collections: list[str], excluded: list[str]) -> list[str]:
    unknown = set(excluded) - set(writers.COLLECTIONS)
    if unknown:
        raise ValueError(f"unknown collection {', '.join(sorted(unknown))}: choose from {', '.join(writers.COLLECTIONS)}")
    return [c for c in collections if c not in excluded]


def with_network_of(config: TrainConfig, weights: Path) -> TrainConfig:
    """The config, training the network that `weights` holds: fine-tuning continues that network, whatever
    the preset's own network is. An exported model.pt and a training checkpoint both record it."""
    try:
        network = checkpoint.read_weights(weights)
    except Exception as err:  # missing, damaged, or not ours: say which file and why
        raise checkpoint.CheckpointError(
            f"{weights}: cannot read the network to fine-tune ({type(err).__name__}: {err}); give a model.pt from "
            "`digitrecognizer export` or a checkpoint from a run") from err
    return replace(config, model=network.model, model_args=dict(network.model_args), init_weights=str(weights))
