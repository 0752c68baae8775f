"""Config of stackd: pydantic models of model-stacks.yaml, the loader, the JSON Schema export."""

from stackd.config.models import (
    Api,
    Lifecycle,
    Model,
    Placement,
    Runtime,
    Stack,
    StacksConfig,
)

__all__ = ["Api", "Lifecycle", "Model", "Placement", "Runtime", "Stack", "StacksConfig"]
