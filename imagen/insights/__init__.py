"""Model-improvement insights (policy §3): consent-gated, derived signals with no link to a person, released only as
aggregates over groups of at least IMAGEN_INSIGHTS_MIN_GROUP (docs/insights.md)."""
