"""emotrack clients: subscribers that depend only on streamer.schema and pyzmq.

- ``emotrack record --sub tcp://HOST:PORT --out FILE.jsonl|FILE.csv``: every message,
  flushed line by line; seq gaps and publisher restarts reported (clients/record.py).
- ``emotrack view --sub tcp://HOST:PORT [--port 8080] [--host 127.0.0.1]``: live
  dashboard over server-sent events, static page in clients/static (clients/view.py).
- ``emotrack report RESULTS.jsonl -o report.html [--png report.png]``: programme
  report; needs matplotlib, the ``report`` extra (clients/report.py).

All three share clients/feed.py: SUB socket, the streamer's snapshot server for
history (the Clone pattern: default endpoint = PUB port + 1), de-duplication by
(stream, topic, seq) and loss accounting.
"""
