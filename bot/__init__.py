"""Channel adapters and the conversation runtime (dispatcher, outbox)."""
