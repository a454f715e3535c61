"""What `flexopt macs` shows: the MACs of a full step and of a partial step per branch.

Built here as a value, so the command only prints it (a table or JSON). No weights are loaded:
counting runs on the meta device from the model's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flexopt.models.loading import load_controlnet_config, load_unet_config
from flexopt.run.budget import format_macs
from flexopt.run.cost import MacsProfile, count_controlnet_macs, count_macs


@dataclass(frozen=True)
class MacsSummary:
    """A model's step costs at batch 1; `controlnet_macs` for a ControlNet pipeline (its
    ControlNet, beside the U-Net's MACs and outside a schedule's)."""

    model: str
    unet_config: dict[str, Any]
    sample_size: Any  # the input height = width counted (None: the config gives none)
    profile: MacsProfile
    controlnet_macs: int | None = None

    def to_json(self, attention: bool = False) -> dict[str, Any]:
        extra = {} if self.controlnet_macs is None else {"controlnet_macs": self.controlnet_macs}
        return {**self.profile.to_json(attention), **extra}

    def lines(self, attention: bool = False) -> list[str]:
        """The text `flexopt macs` prints; `attention` adds the attention matmuls' line."""
        p = self.profile
        out = [f"model      : {self.model} ({self.unet_config['_class_name']}, input "
               f"{self.sample_size}, batch 1)",
               f"full step  : {format_macs(p.full)} MACs"]
        if self.controlnet_macs is not None:
            out.append(f"controlnet : {format_macs(self.controlnet_macs)} MACs per executed step "
                       "(beside the U-Net's; not in a schedule's MACs)")
        if attention:
            out.append(f"attention  : {format_macs(p.attention_full)} (matmuls, not in MACs)")
        out += [f"max branch : {p.max_branch}", "branch  partial MACs  of full"]
        out += [f"{b:>6}  {format_macs(m):>12}  {100 * m / p.full:6.1f}%"
                for b, m in enumerate(p.partial, 1)]
        return out


def summarize_macs(model: str, sample_size: int | None = None) -> MacsSummary:
    """The MACs of MODEL (a pipeline or model directory, a hub id, or a U-Net config.json) at
    `sample_size` (default: the config's `sample_size`)."""
    config = load_unet_config(model)
    profile = count_macs(config, sample_size)
    size = sample_size or config.get("sample_size")
    controlnet = load_controlnet_config(model)
    extra = None if controlnet is None else count_controlnet_macs(controlnet, size)
    return MacsSummary(model, config, size, profile, extra)
