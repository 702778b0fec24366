"""The master role: the leader lease, depth checks and the placement of queues."""
