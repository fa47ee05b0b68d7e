"""The `edge-gemma` command: click commands only. Parse, call one library function, print."""
