"""The budget of a search: a maximum avg MACs per step, given as MACs or as a speedup over the
teacher; with a latency cost (`--cost latency`), a wall-clock speedup or seconds per batch.
Light on purpose (no torch): configs and `flexopt --help` parse budgets."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from flexopt.errors import FlexoptError

_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BUDGET_RE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTkmgt]?|[xX]|[mM][sS]|[sS])\s*$")
_SECONDS = {"S": 1.0, "MS": 1e-3}


@dataclass(frozen=True)
class Budget:
    """A maximum avg MACs, given directly (`3G`, `250M`, `6.1e9`) or as a speedup (`2.5x`); or,
    for a latency cost, seconds per batch (`1.5s`, `800ms`)."""

    macs: float | None = None
    speedup: float | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | float | int) -> Budget:
        if isinstance(text, int | float) and not isinstance(text, bool):
            text = repr(text)
        m = _BUDGET_RE.match(str(text))
        if not m or not 0 < float(m.group(1)) * _UNITS.get(m.group(2).upper(), 1.0) < math.inf:
            raise FlexoptError(  # 1e400 parses as infinity: no budget at all, not a big one
                f"budget {text!r} is invalid; allowed: avg MACs such as 3G, 250M, 6.1e9, "
                "a speedup such as 2.5x, or (with --cost latency) seconds such as 1.5s, 800ms"
            )
        value, unit = float(m.group(1)), m.group(2).upper()
        if unit in _SECONDS:
            return cls(seconds=value * _SECONDS[unit])
        if unit == "X":
            if value <= 1:
                raise FlexoptError(f"budget {text!r}: a speedup must be above 1x")
            return cls(speedup=value)
        return cls(macs=value * _UNITS[unit])

    def check_unit(self, cost: str) -> Budget:
        """Refuse a budget in the other cost's unit: seconds with `macs`, MACs with `latency`."""
        if cost == "macs" and self.seconds is not None:
            raise FlexoptError(
                f"budget {self} is wall-clock seconds, but the cost is MACs; allowed: avg MACs "
                "such as 3G, a speedup such as 2.5x, or --cost latency for seconds")
        if cost == "latency" and self.macs is not None:
            raise FlexoptError(
                f"budget {self} is in MACs, but the cost is latency; allowed: a wall-clock "
                "speedup such as 3x, or seconds per batch such as 1.5s or 800ms")
        return self

    def max_avg_macs(self, full_macs: float) -> float:
        """The avg-MACs ceiling for a model whose full step costs `full_macs`."""
        self.check_unit("macs")
        return self.macs if self.macs is not None else full_macs / self.speedup

    def __str__(self) -> str:
        if self.speedup is not None:
            return f"{self.speedup:g}x"
        if self.seconds is not None:
            return f"{self.seconds:g}s"
        return format_macs(self.macs)


def format_macs(macs: float) -> str:
    """Human form of a MACs count: 6.10G, 250.0M."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            return f"{macs / scale:.2f}{unit}"
    return f"{macs:.3g}"
