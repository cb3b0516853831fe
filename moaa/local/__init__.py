"""The embedded default model: its GGUF, its supervised llama.cpp server, the offline sentence embedder."""
