"""emotrack clients: subscribers that depend only on streamer.schema and pyzmq."""
