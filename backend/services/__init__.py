"""Use cases. Each takes a session (the unit of work) and returns plain typed objects."""
