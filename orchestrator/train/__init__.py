"""The worker side: the GPT, the training loop, evaluation, checkpoints and resume.

May import: spec, data, plan, track, report (the live artifacts). Never launchers or the CLI.
"""
