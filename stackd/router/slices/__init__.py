"""Elastic slice routing: difficulty -> slice, validators that promote, controls, audit (docs/router.md)."""

from stackd.router.slices.runner import SliceRouter, routed_preset
from stackd.router.slices.types import SlicedAnswer, SliceRequest, SliceTry
from stackd.router.slices.validators import InvalidSliceRequest

__all__ = ["InvalidSliceRequest", "SliceRequest", "SliceRouter", "SliceTry", "SlicedAnswer", "routed_preset"]
