"""The importer's pure readers: safetensors headers, file hashes and sidecar metadata."""
