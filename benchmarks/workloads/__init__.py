"""The request workloads of the overhead gates (issue 15), each buildable bare and instrumented.

- ``w1_ai``: the AI request: an API-key lookup with SQLAlchemy, the real ``openai`` SDK (async
  client) against the OpenAI emulator in another process, a usage-row insert, a JSON answer.
- ``w2_crud``: the CRUD request (the suite's ``real`` scenario): 5 SQLAlchemy core queries on
  in-memory SQLite and a 50-item JSON list.
- ``w3_hello``: the hello request (the suite's ``asgi`` scenario): a small JSON answer.

``_asgi`` drives an ASGI app directly (``await app(scope, receive, send)``, no server), and
``_emulator`` runs the emulator as its own process so its CPU is never charged.
"""
