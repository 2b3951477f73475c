"""KL coefficient controllers: fixed, or adaptive toward a target KL (Ziegler et al., 2019)."""

from __future__ import annotations

from typing import Protocol


class KlController(Protocol):
    value: float

    def update(self, current_kl: float, num_samples: int) -> None:
        """Take one rollout batch's mean sequence KL into account."""

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


class FixedKlController:
    """A constant coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, num_samples: int) -> None:
        return None

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKlController:
    """Raise the coefficient while KL is above target, lower it while below; the step is bounded.

    The proportional error is clipped to ±20% and scaled by samples / horizon, so one noisy batch
    cannot swing the coefficient.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, num_samples: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * num_samples / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


def build_kl_controller(kl_coef: float, adaptive: bool, target: float, horizon: int) -> KlController:
    """The controller the spec asks for (`method.adaptive_kl`)."""
    if adaptive:
        return AdaptiveKlController(kl_coef, target, horizon)
    return FixedKlController(kl_coef)
