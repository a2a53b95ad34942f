"""Detection data in COCO format."""
from .coco import CocoDetection, build_loader, coco_paths, collate, to_model_input

__all__ = ["CocoDetection", "build_loader", "coco_paths", "collate", "to_model_input"]
