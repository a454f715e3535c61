"""How a schedule runs: `FlexScheduler` (exact DDIM / PLMS / DPM-Solver over any grid), the U-Net
executor and hook (`scheduled(pipe, s)`), shared-prefix reuse, batching, and the cost in MACs.
"""
