from stylize.cli import run

run()
