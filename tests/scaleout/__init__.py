"""The scale-out test's parts: a PostgreSQL of its own, `hotline serve` processes, the
platforms' stand-ins as recorders, simulated residents, and the counts taken after."""
