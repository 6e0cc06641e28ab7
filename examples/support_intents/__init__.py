"""The support-intents example: a task app (`task_app.py`), its dataset and two jobs.

Run the task app from a checkout with `python examples/support_intents/task_app.py`, or
from an installed package with `python -m mipro.examples.support_intents.task_app`.
"""
