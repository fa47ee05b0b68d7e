"""Other programs use the model: the OpenAI-compatible app, its single model worker, service units."""
