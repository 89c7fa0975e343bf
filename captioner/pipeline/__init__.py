"""The pipeline that builds and measures models: data, features, training, evaluation, model cards."""
