"""A two-stage example task app: a router picks the department, an answerer the intent."""
