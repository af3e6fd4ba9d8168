"""Public path of the FLOPs counter (DESIGN.md: `asp_export.flops.count`), from `asp_export.surgery.flops`."""

from asp_export.surgery.flops import FlopsReport, LayerFlops, count, format_count

__all__ = ["FlopsReport", "LayerFlops", "count", "format_count"]
