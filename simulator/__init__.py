"""The local stand-in for the providers' HTTP APIs: a separate server that only the demo, the tests and
drills start (``python -m simulator``). Nothing in the product imports it; the real SDK clients and agent
CLIs talk to it over HTTP.

``server`` (the app, its runner and the control API's wiring), ``core`` (state, faults, latency),
``anthropic_api``, ``openai_api``, ``ollama_api`` (the three wire formats), ``answers`` (deterministic
answers by task kind), ``control`` (``/_sim/*``).
"""
