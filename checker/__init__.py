"""A Jepsen-style checker for flask_sse_stream: a real deployment, faults, a recorded history, a checker.

The pieces are separate: ``deploy`` starts the system under test, ``clients``
and ``senders`` drive it and record what they saw, ``nemesis`` injects faults
on a schedule drawn from the seed, ``history`` is the record, and ``check``
reads a history and knows nothing of how the library works.
"""
