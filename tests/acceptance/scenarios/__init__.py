"""One module per scenario of issue 13; each exposes ``async def run(stack, options)``."""
