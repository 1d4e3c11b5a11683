"""Stage 05: the labelled data, the MLlib pipelines of each variant, training with time-ordered cross-validation,
evaluation, the model store and its cache, and scoring the stored toots."""

__all__ = ["cache", "data", "evaluation", "lexicons", "pipelines", "scoring", "store", "training", "vader"]
