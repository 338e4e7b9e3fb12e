"""W&B dashboards for a sweep, built with wandb-workspaces from the harness's own metric names.

    python -m harness.dashboard ENTITY/PROJECT --sweep-dir multirun/sgd_vs_adamw --report

layout.py   the sections and panels (plain data, keys from harness.metrics)
select.py   each optimizer's best lr, by validation accuracy
build.py    layout -> wandb-workspaces Workspace views and Report
spec.py     all of it as one JSON dict (dashboard.json)
online.py   the offline decision, W&B rows, saving
"""
