"""The worker role: heartbeats, fencing, and a consumer process per assignment."""
