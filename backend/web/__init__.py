"""The aiohttp web service."""
