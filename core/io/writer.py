"""Write an ``OctVolume`` as a DICOM Ophthalmic Tomography Image (multi-frame, OPT modality).

The file carries the modules of the Ophthalmic Tomography Image IOD (PS3.3 A.41): Patient, General
Study, General/Ophthalmic Tomography Series, Frame of Reference, General and Enhanced General
Equipment, Image Pixel, Multi-frame Functional Groups (Pixel Measures, Plane Position/Orientation,
Frame Content with InStackPositionNumber, Frame Anatomy with FrameLaterality), Multi-frame
Dimension, Acquisition Context, Ophthalmic Tomography Image / Acquisition Parameters / Parameters,
Ocular Region Imaged and SOP Common. Writing is atomic (temp file + rename) and never overwrites
unless asked.

Ground truth (``volume.label`` / ``frame_labels``, present on synthetic data) is kept in
ImageComments / FrameComments behind the marker ``GROUND_TRUTH_MARKER`` so that ``open_path`` can
restore it; clinical files never carry that marker.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import numpy as np
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from core.fileio import atomic_output
from core.volume import OctVolume

log = logging.getLogger(__name__)

__all__ = [
    "write_opt",
    "write_dicomdir",
    "build_opt_dataset",
    "OPT_SOP_CLASS",
    "J2K_MIN_SIDE",
    "GROUND_TRUTH_MARKER",
    "SUPPORTED_TRANSFER_SYNTAXES",
]

OPT_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.77.1.5.4")
GROUND_TRUTH_MARKER = "OCTSCREEN ground truth: "
SUPPORTED_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless)
_SOFTWARE = "OCT Screen"
J2K_MIN_SIDE = 32
"""OpenJPEG's default 6 resolution levels need at least 32 pixels per side."""


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds_number(value: float) -> str:
    """A decimal string (DS, at most 16 characters) that round-trips ``value`` as closely as DS allows."""
    text = repr(float(value))
    if len(text) <= 16:
        return text
    return f"{value:.10g}"


def _resolve_syntax(transfer_syntax: str | None) -> UID:
    if transfer_syntax is None:
        return ExplicitVRLittleEndian
    text = str(transfer_syntax)
    uid = getattr(pydicom.uid, text, None) if text.isidentifier() else UID(text)
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        names = ", ".join(str(u.keyword) for u in SUPPORTED_TRANSFER_SYNTAXES)
        raise ValueError(f"transfer syntax {transfer_syntax!r} is not supported for writing; use one of {names}")
    return uid


def new_file_meta(sop_class: str) -> FileMetaDataset:
    """PS3.10 file meta for a new instance of ``sop_class`` (new SOP instance UID, explicit VR LE)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def build_opt_dataset(volume: OctVolume, *, now: dt.datetime | None = None) -> Dataset:
    """The uncompressed OPT dataset (with file meta) for ``volume``; ``write_opt`` saves it."""
    now = now or dt.datetime.now()
    n, h, w = volume.shape
    bits = volume.bit_depth
    pixels = np.ascontiguousarray(volume.bscans)

    meta = new_file_meta(OPT_SOP_CLASS)
    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = OPT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient
    p = volume.patient
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    # General Study
    s = volume.study
    ds.StudyInstanceUID = s.study_uid or generate_uid()
    ds.StudyDate = s.study_date
    ds.StudyTime = s.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = s.study_id
    ds.AccessionNumber = s.accession_number
    # General + Ophthalmic Tomography Series
    ds.Modality = "OPT"
    ds.SeriesInstanceUID = s.series_uid or generate_uid()
    ds.SeriesNumber = s.series_number if s.series_number is not None else 1
    if s.description:
        ds.SeriesDescription = s.description
    # No series Laterality (0020,0060): its type 2C condition excludes it when Image Laterality is
    # present, and the Ocular Region Imaged module below always writes ImageLaterality.
    # Frame of Reference (+ Synchronization is conditional on simultaneous fundus imaging: not written)
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    # General + Enhanced General Equipment (type 1 in the latter: never empty)
    d = volume.device
    ds.Manufacturer = d.manufacturer or _SOFTWARE
    ds.ManufacturerModelName = d.model or "unknown"
    ds.DeviceSerialNumber = "unknown"
    ds.SoftwareVersions = d.software_version or "unknown"
    # Ophthalmic Tomography Image
    ds.ImageType = ["DERIVED", "PRIMARY"]  # written by OCT Screen, not by the acquiring device
    ds.InstanceNumber = 1
    ds.ContentDate = s.study_date or now.strftime("%Y%m%d")
    ds.ContentTime = s.study_time or now.strftime("%H%M%S")
    ds.AcquisitionDateTime = (s.study_date + s.study_time) if s.study_date else now.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDuration = 0.0
    ds.AcquisitionNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    # Concatenations are not permitted in this IOD: the module fixes these type 1 values
    ds.ConcatenationFrameOffsetNumber = 0
    ds.InConcatenationNumber = 1
    ds.InConcatenationTotalNumber = 1
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = h
    ds.Columns = w
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.NumberOfFrames = n
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    # Acquisition Context (type 2: present, may be empty)
    ds.AcquisitionContextSequence = Sequence()
    # Ophthalmic Tomography Acquisition Parameters (type 2)
    ds.AxialLengthOfTheEye = None
    ds.HorizontalFieldOfView = None
    ds.RefractiveStateSequence = Sequence()
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = ""
    # Ophthalmic Tomography Parameters
    ds.AcquisitionDeviceTypeCodeSequence = Sequence(
        [_code("392012008", "SCT", "Optical Coherence Tomography Scanner")]  # CID 4210 (SRT A-00FBE retired)
    )
    ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.DetectorType = "CCD"
    # Ocular Region Imaged
    ds.ImageLaterality = volume.laterality.dicom or "U"
    ds.AnatomicRegionSequence = Sequence([_code("5665001", "SCT", "Retina")])
    if volume.label:
        ds.ImageComments = GROUND_TRUTH_MARKER + volume.label
    _add_functional_groups(ds, volume)
    return ds


def _add_functional_groups(ds: Dataset, volume: OctVolume) -> None:
    """Shared (pixel measures, orientation, anatomy) and per-frame (position, content) groups."""
    n = volume.n_bscans
    sp = volume.spacing
    shared = Dataset()
    measures = Dataset()
    if sp.row is not None and sp.column is not None:
        measures.PixelSpacing = [_ds_number(sp.row), _ds_number(sp.column)]
    if sp.slice is not None:
        measures.SliceThickness = _ds_number(sp.slice)
        measures.SpacingBetweenSlices = _ds_number(sp.slice)
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = Sequence([_code("5665001", "SCT", "Retina")])
    anatomy.FrameLaterality = volume.laterality.dicom or "U"
    shared.FrameAnatomySequence = Sequence([anatomy])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    # Dimensions: one stack, indexed by InStackPositionNumber.
    ds.DimensionOrganizationType = "3D"
    dim_uid = generate_uid()
    organization = Dataset()
    organization.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = Sequence([organization])
    indices = []
    for pointer, description in ((0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number")):
        index = Dataset()
        index.DimensionOrganizationUID = dim_uid
        index.DimensionIndexPointer = pointer
        index.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
        index.DimensionDescriptionLabel = description
        indices.append(index)
    ds.DimensionIndexSequence = Sequence(indices)

    step = sp.slice if sp.slice is not None else 0.0  # unknown spacing: no invented geometry
    labels = volume.frame_labels
    frames = []
    for i in range(n):
        frame = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = i + 1
        content.DimensionIndexValues = [1, i + 1]
        if labels is not None:
            content.FrameComments = GROUND_TRUTH_MARKER + labels[i]
        frame.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, _ds_number(i * step)]
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)


def write_opt(
    volume: OctVolume, path: str | Path, *, transfer_syntax: str | None = None, overwrite: bool = False
) -> Path:
    """Write ``volume`` as a multi-frame DICOM Ophthalmic Tomography Image at ``path``.

    transfer_syntax: None (Explicit VR Little Endian), or 'JPEG2000Lossless' / 'RLELossless' (the
    keyword or the UID); compression uses pydicom's encoders (pylibjpeg-openjpeg / pydicom RLE).
    JPEG 2000 needs B-scans of at least ``J2K_MIN_SIDE`` pixels per side (ValueError otherwise).
    The file is written to a temporary name in the same folder and renamed into place; an existing
    file is refused with FileExistsError unless ``overwrite=True``. Returns the path written.
    """
    path = Path(path)
    syntax = _resolve_syntax(transfer_syntax)
    if syntax == JPEG2000Lossless and min(volume.shape[1:]) < J2K_MIN_SIDE:
        raise ValueError(
            f"JPEG 2000 needs B-scans of at least {J2K_MIN_SIDE} x {J2K_MIN_SIDE} pixels "
            f"(got {volume.shape[2]} x {volume.shape[1]}); write uncompressed or RLE instead"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    ds = build_opt_dataset(volume)
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    with atomic_output(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
    log.info("wrote %s (%d frames, %s)", path, volume.n_bscans, syntax.name)
    return path


def write_dicomdir(files: list[str | Path], folder: str | Path, *, overwrite: bool = False) -> Path:
    """Copy DICOM ``files`` into ``folder`` as a DICOM File-set (PS3.10 media) and return its DICOMDIR.

    pydicom's ``FileSet`` names the copies (PT000000/ST000000/...) and writes the DICOMDIR; an
    existing DICOMDIR in ``folder`` is refused with FileExistsError unless ``overwrite=True``.
    """
    folder = Path(folder)
    dicomdir = folder / "DICOMDIR"
    if dicomdir.exists() and not overwrite:
        raise FileExistsError(f"{dicomdir}: already exists (pass overwrite=True to replace it)")
    fileset = FileSet()
    for path in files:
        fileset.add(str(path))
    folder.mkdir(parents=True, exist_ok=True)
    fileset.write(folder)
    log.info("wrote %s (%d files)", dicomdir, len(files))
    return dicomdir
