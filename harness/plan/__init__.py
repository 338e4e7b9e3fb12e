"""Will a trial fit, and what will a sweep cost? `python -m harness.plan <overrides of a trial or sweep>`.

- schema.py: PlanConfig (conf/plan/default.yaml holds the defaults);
- gpus.py: the known devices (memory, bf16 peak FLOP/s);
- archs.py: a model's config.json without network (local folder, HF cache, or a shipped table);
- shapes.py: parameter counts and optimizer state from the model built on the meta device;
- estimate.py: pure functions: memory terms per phase, FLOPs and time per step;
- trial.py: `plan_trial(cfg, world, device)`, one trial's plan from its composed config;
- sweep.py: the trials a command line stands for, composed as `python -m harness` composes them;
- __main__.py: the command. `harness.slurm.checks.fit_problem` plans a SLURM sweep before it is submitted.
"""
