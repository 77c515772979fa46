"""Model registry and families. See :mod:`ferkit.models.registry`."""

from ferkit.models.registry import ModelCard, count_parameters, create_model, get_card, list_models, register_model

__all__ = ["ModelCard", "count_parameters", "create_model", "get_card", "list_models", "register_model"]
