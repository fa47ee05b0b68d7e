"""What the assistant can do: Home Assistant's built-in intents as tools, and offline tools of its own."""
