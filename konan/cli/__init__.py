"""The `konan` command (Typer + Rich): thin over the SDK; `up`, `server`, `worker`, `monitor` and
`admin …` are composition roots that may touch server internals."""
