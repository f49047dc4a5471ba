"""Fine-tuning on NL code search, long-context retrieval and type inference, and forgetting."""
