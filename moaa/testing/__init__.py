"""Test servers: OpenAI-compatible and Batch API servers that inject faults, a crashing llama.cpp stand-in."""
