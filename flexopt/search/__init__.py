"""The search: the one Optuna `Objective`, `FlexEvolutionSampler`, pruning rungs, study
settings and baselines, storages and workers (`optimize`, `run_search`), and held-out
validation.
"""
