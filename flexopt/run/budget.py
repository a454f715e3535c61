"""The budget of a search: a maximum avg MACs per step, given as MACs or as a speedup over the
teacher. Light on purpose (no torch): configs and `flexopt --help` parse budgets."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from flexopt.errors import FlexoptError

_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTkmgt]?|[xX])\s*$")


@dataclass(frozen=True)
class Budget:
    """A maximum avg MACs, given directly (`3G`, `250M`, `6.1e9`) or as a speedup (`2.5x`)."""

    macs: float | None = None
    speedup: float | None = None

    @classmethod
    def parse(cls, text: str | float | int) -> Budget:
        if isinstance(text, int | float) and not isinstance(text, bool):
            text = repr(text)
        m = _BUDGET_RE.match(str(text))
        if not m or not 0 < float(m.group(1)) * _UNITS.get(m.group(2).upper(), 1.0) < math.inf:
            raise FlexoptError(  # 1e400 parses as infinity: no budget at all, not a big one
                f"budget {text!r} is invalid; allowed: avg MACs such as 3G, 250M, 6.1e9, "
                "or a speedup such as 2.5x"
            )
        value, unit = float(m.group(1)), m.group(2).upper()
        if unit == "X":
            if value <= 1:
                raise FlexoptError(f"budget {text!r}: a speedup must be above 1x")
            return cls(speedup=value)
        return cls(macs=value * _UNITS[unit])

    def max_avg_macs(self, full_macs: float) -> float:
        """The avg-MACs ceiling for a model whose full step costs `full_macs`."""
        return self.macs if self.macs is not None else full_macs / self.speedup

    def __str__(self) -> str:
        if self.speedup is not None:
            return f"{self.speedup:g}x"
        return format_macs(self.macs)


def format_macs(macs: float) -> str:
    """Human form of a MACs count: 6.10G, 250.0M."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            return f"{macs / scale:.2f}{unit}"
    return f"{macs:.3g}"
