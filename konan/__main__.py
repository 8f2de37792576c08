from konan.cli.main import app

app(prog_name="konan")
