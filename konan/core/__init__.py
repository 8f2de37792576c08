"""Settings, the error tree and shared types. Imports nothing else from konan."""
