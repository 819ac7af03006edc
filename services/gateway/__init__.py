"""Search gateway: HTTP/JSON and gRPC front door over one search core."""
