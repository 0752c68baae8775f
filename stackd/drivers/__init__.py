"""One module per engine (docker, ollama, remote), each behind a typed Protocol from ``base``."""
