"""Offline evaluation: full-catalogue metrics, the baselines, the model registry, the harness.

The logs, loaders and the leave-last-out split it scores on live in
`models.datasets`; `harness.run_eval` replays a log through each model of
`registry.MODELS` and scores next-item prediction over the full catalogue;
`ablation.run_ablation` scores the time-decay core with each part of its
interest structure switched off.
"""
