"""The consumer role: one assignment's process, and its engine."""
