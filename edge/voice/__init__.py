"""The voice assistant: an audio conversation with text history (conversation) and its loop."""
