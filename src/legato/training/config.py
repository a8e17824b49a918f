"""Training configuration (the ``train`` section of params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from legato.columns import SERSIC_COLUMNS
from legato.errors import ConfigError
from legato.models.architectures import ARCHITECTURES

MODES = ("multi_output", "per_parameter")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training.

    Attributes
    ----------
    arch : str
        ``arch1`` or ``arch2``.
    mode : str
        ``multi_output`` (one network, four outputs) or ``per_parameter`` (one network per target, as the paper).
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Stamps per step.
    learning_rate : float
        Initial Adam learning rate (cosine decay to zero over ``epochs``).
    patience : int
        Early-stopping patience on the validation loss, epochs.
    max_train : int or None
        Use only the first ``max_train`` training stamps (None: all).
    dropout, input_noise, input_scale : float
        Network regularisation and input scaling (see ``build_network``).
    augment : bool
        Random flips and 90-degree rotations.
    recalibration_stamps : int
        Training stamps for the inference-mode head recalibration after training (0: none).
    recalibration_learning_rate : float
        Adam learning rate of that recalibration.
    seed : int
        Seed of weights, shuffling, augmentation and noise.
    targets : tuple of str
        Regressed parameters.
    """

    arch: str = "arch1"
    mode: str = "multi_output"
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 3
    max_train: int | None = None
    dropout: float = 0.1
    input_noise: float = 0.01
    input_scale: float = 0.01
    augment: bool = True
    recalibration_stamps: int = 20_000
    recalibration_learning_rate: float = 1e-4
    seed: int = 42
    targets: tuple = field(default=SERSIC_COLUMNS)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown training mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("epochs, batch_size and patience must be positive")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.recalibration_stamps < 0:
            raise ConfigError(f"recalibration_stamps must be >= 0, got {self.recalibration_stamps}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        unknown = set(self.targets) - set(SERSIC_COLUMNS)
        if unknown:
            raise ConfigError(f"unknown target(s) {sorted(unknown)}; targets are {', '.join(SERSIC_COLUMNS)}")

    @classmethod
    def from_params(cls, params: dict, arch: str, overrides: dict | None = None) -> TrainConfig:
        """Configuration from params.yaml: the ``train`` section, then ``train_<arch>``, then overrides."""
        values = dict(params.get("train") or {})
        values.update(params.get(f"train_{arch}") or {})
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        values["arch"] = arch
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown training parameter(s): {', '.join(sorted(unknown))}")
        if "targets" in values:
            values["targets"] = tuple(values["targets"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad training parameters: {exc}") from None
