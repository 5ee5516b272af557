"""`ganops train`: not implemented yet; its issue lands it."""

from pipelines.common import ParamsOpt, not_implemented


def main(params: ParamsOpt = "params.yaml") -> None:  # type: ignore[assignment]
    """(not implemented yet)"""
    not_implemented("train")
