"""Prefect only: the pipeline, compare and loop flows, schedules, task runners, rate limits, settings.

The logic they run lives in moaa/.
"""
