"""Who answers a prompt: one `ChatModel` interface, an OpenAI-compatible client, the offline
extractive teacher, and a request cache that wraps any of them."""
