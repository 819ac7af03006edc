"""Text encoder: multilingual-e5-small (default) or all-MiniLM-L6-v2 behind the encoder gRPC shape."""
