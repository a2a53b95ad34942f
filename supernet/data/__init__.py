"""Detection data in COCO format."""
from .coco import CocoDetection, build_loader, coco_paths, collate

__all__ = ["CocoDetection", "build_loader", "coco_paths", "collate"]
