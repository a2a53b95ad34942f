"""Detection data in COCO format."""
from .coco import CocoDetection, build_loader, coco_paths, collate, to_model_input
from .sources import build_datasets

__all__ = ["CocoDetection", "build_datasets", "build_loader", "coco_paths", "collate", "to_model_input"]
