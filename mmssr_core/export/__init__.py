"""Write a selection as training data that LLaVA and LLaMA-Factory read, in a folder that can be moved.

Selection works on ids and scores; export joins the chosen ids back to the ingested conversations
(the store's raw pool), places the images (copied into the folder by default) and writes the training
file plus LLaMA-Factory's `dataset_info.json`.

    from mmssr_core.export import export_selection
    export_selection(selection_frame, store, "llava", "train/mmssr_10.json")
"""

from mmssr_core.export.bundle import export_selection
from mmssr_core.export.errors import ExportError
from mmssr_core.export.images import MODES as IMAGE_MODES
from mmssr_core.export.llamafactory import INFO_FILE, dataset_name, llamafactory_dataset_info
from mmssr_core.export.records import FORMATS, to_llava, to_sharegpt

__all__ = [
    "ExportError",
    "FORMATS",
    "IMAGE_MODES",
    "INFO_FILE",
    "dataset_name",
    "export_selection",
    "llamafactory_dataset_info",
    "to_llava",
    "to_sharegpt",
]
