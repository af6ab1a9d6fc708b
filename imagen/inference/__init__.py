"""The inference runtime: job spec + model files -> images + signals. Never touches the database."""
