"""Stage 06 and the run: the notebook runner (papermill, one shared driver JVM), the offline HTML and the index, the
charts, the invariants the notebooks display and the tests assert, the problems table, the bench results."""

__all__ = ["bench", "checks", "html", "plots", "problems", "runner"]
