"""The SOP classes and transfer syntaxes OCT Screen negotiates (docs/CONFORMANCE.md lists the same).

- ``STORAGE_CLASSES``: what our storage SCP (``listen``, the C-MOVE destination) and the C-GET SCP
  role accept, and what ``send_files`` can send: OCT (OPT), the images that travel with an OCT
  exam (ophthalmic photography, en face images, thickness maps, B-scan volume analyses, secondary
  capture, key objects, presentation states), and the objects OCT Screen writes (Encapsulated PDF,
  Secondary Capture overlays, Structured Reports). Only OPT instances are screened.
- ``IMAGE_TRANSFER_SYNTAXES``: uncompressed ones plus every compressed one an installed decoder
  reads (core.io decodes what we store); ``DOCUMENT_TRANSFER_SYNTAXES``: uncompressed only.
"""

from __future__ import annotations

import functools

from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from core.io.writer import OPT_SOP_CLASS

__all__ = [
    "OPT_SOP_CLASS",
    "IMAGE_CLASSES",
    "DOCUMENT_CLASSES",
    "STORAGE_CLASSES",
    "UNCOMPRESSED",
    "image_transfer_syntaxes",
    "transfer_syntaxes_for",
    "sop_name",
]

#: Image storage SOP classes (pixel data required).
IMAGE_CLASSES: dict[UID, str] = {
    OPT_SOP_CLASS: "Ophthalmic Tomography Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.77.1.5.1"): "Ophthalmic Photography 8 Bit Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.77.1.5.2"): "Ophthalmic Photography 16 Bit Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.7"): "Secondary Capture Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.7.2"): "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.7.3"): "Multi-frame Grayscale Word Secondary Capture Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.7.4"): "Multi-frame True Color Secondary Capture Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.77.1.5.5"): "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.77.1.5.6"): "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.77.1.5.7"): "Ophthalmic Optical Coherence Tomography En Face Image Storage",
    UID("1.2.840.10008.5.1.4.1.1.77.1.5.8"): "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage",
    UID("1.2.840.10008.5.1.4.1.1.81.1"): "Ophthalmic Thickness Map Storage",
}
#: Document storage SOP classes (no pixel data).
DOCUMENT_CLASSES: dict[UID, str] = {
    EncapsulatedPDFStorage: "Encapsulated PDF Storage",
    ComprehensiveSRStorage: "Comprehensive SR Storage",
    EnhancedSRStorage: "Enhanced SR Storage",
    UID("1.2.840.10008.5.1.4.1.1.88.11"): "Basic Text SR Storage",
    UID("1.2.840.10008.5.1.4.1.1.88.59"): "Key Object Selection Document Storage",
    UID("1.2.840.10008.5.1.4.1.1.11.1"): "Grayscale Softcopy Presentation State Storage",
}
STORAGE_CLASSES: dict[UID, str] = {**IMAGE_CLASSES, **DOCUMENT_CLASSES}

UNCOMPRESSED: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


@functools.cache
def image_transfer_syntaxes() -> tuple[UID, ...]:
    """Uncompressed syntaxes, then every JPEG, JPEG-LS, JPEG 2000 and RLE syntax whose decoder is installed."""
    found = list(UNCOMPRESSED)
    for ts in [*JPEG2000TransferSyntaxes, *JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, RLELossless]:
        try:
            if get_decoder(ts).is_available and ts not in found:
                found.append(ts)
        except (NotImplementedError, ValueError):
            continue
    return tuple(found)


def transfer_syntaxes_for(sop_class: str) -> tuple[UID, ...]:
    """The transfer syntaxes we accept for ``sop_class`` (images: also compressed ones)."""
    return image_transfer_syntaxes() if UID(sop_class) in IMAGE_CLASSES else UNCOMPRESSED


def sop_name(sop_class: str) -> str:
    """A SOP class's name (pydicom's dictionary, ours first), or the UID itself."""
    uid = UID(str(sop_class))
    return STORAGE_CLASSES.get(uid) or (uid.name if uid.is_valid else str(sop_class))
