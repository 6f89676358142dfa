"""`drat bench frontier`: every strategy measured side by side in one process (placeholder)."""


def add_bench_parser(sub) -> None:
    pass
