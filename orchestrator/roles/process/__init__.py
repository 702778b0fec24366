"""What every process shares: its entry, supervision, channels, signals and loops, the
notes to the supervisor and the worker ↔ consumer protocol. Below the three roles."""
