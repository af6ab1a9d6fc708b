"""Privacy requests (policy §8) for people who cannot self-serve: states, deadlines, identity codes, audit trail."""
