"""Model registry and families. See :mod:`ferkit.models.registry`.

Importing this package registers every family (their ``@register_model`` decorators run on import).
"""

from ferkit.models import simple, torchvision_models, vgg11_heads, zoo_models  # noqa: F401  (register families)
from ferkit.models.registry import ModelCard, count_parameters, create_model, get_card, list_models, register_model

__all__ = ["ModelCard", "count_parameters", "create_model", "get_card", "list_models", "register_model"]
