"""Did the adapter get better at its job? Tool-call scoring of generated outputs, prompt sets, and reports.

Pure Python (no torch, no MLX): the workers generate, this package scores, and the same scoring serves an
evaluation run on a job's queue and ``ktoforge eval --endpoint`` against any OpenAI-compatible server.
"""
