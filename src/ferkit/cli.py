def main(argv=None):
    raise SystemExit("ferkit CLI: not built yet")
