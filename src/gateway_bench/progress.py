"""`ProgressBar`: the tqdm bar the load generator and the settlement simulator draw on stderr."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


class ProgressBar:
    """A count of `unit` (out of `total` when the run is a number of requests), headed "warmup"
    while there is one and `label` from the first measured update, updated once per timeline
    interval with a postfix the caller writes."""

    def __init__(
        self, stream: IO[str], total: int | None, warmup_s: float, label: str, unit: str
    ) -> None:
        from tqdm import tqdm  # imported here: a library run without progress never needs it

        # tqdm's own rate would count warmup time too: the postfix carries the interval's rate.
        counted = "{percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt}" if total else "{n_fmt}"
        self.label = label
        self.bar: tqdm[Any] = tqdm(
            total=total,
            file=stream,
            dynamic_ncols=True,
            mininterval=0,
            desc="warmup" if warmup_s else label,
            bar_format="{desc} " + counted + f" {unit} [{{elapsed}}{{postfix}}]",
        )

    def update(self, count: int, postfix: str) -> None:
        self.bar.set_description_str(self.label, refresh=False)
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(count - self.bar.n)

    def close(self, count: int, relabel: bool = True) -> None:
        """The final count; `relabel=False` keeps a "warmup" heading no update replaced."""
        if relabel:
            self.bar.set_description_str(self.label, refresh=False)
        self.bar.update(count - self.bar.n)
        self.bar.close()
