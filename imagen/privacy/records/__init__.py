"""Records the operator must keep (policy §4.2, §4.4, §9): breaches, legal requests, business transfers."""
