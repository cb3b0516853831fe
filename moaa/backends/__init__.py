"""Chat-client backends other than the OpenAI-compatible HTTP client (moaa.client).

- transformers_client: TransformersChatClient, the in-process student (`backend: transformers`).
"""
