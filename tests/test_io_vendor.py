"""Vendor exports (issue 11 item 7): Zeiss Cirrus .img geometry and content, Topcon .fds under
numpy 2, Heidelberg .vol and XML export folders.

The files are built at test time: Cirrus dumps from real B-scans (the CC BY 4.0 test sample) in the
published Cirrus layout; Topcon and .vol files with the binary structures of oct-converter and eyepy
themselves (independent implementations of the formats); the XML export in HEYEX's layout.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import errors as E
from core.io import cirrus, open_path

SAMPLE = Path(__file__).resolve().parent / "data" / "oct2017-sample"
CUBE_NAME = "P0042_Macular Cube {a}x{b}_11-22-2016_10-32-33_{eye}_sn12345_cube_z.img"


def _real_cube(n: int, depth: int, width: int) -> np.ndarray:
    """``n`` B-scans of ``depth`` x ``width`` made from real OCT2017 B-scans (resized, cycled)."""
    files = sorted(SAMPLE.rglob("*.jpeg"))[:4]
    base = [np.asarray(Image.open(f).convert("L").resize((width, depth), Image.BILINEAR)) for f in files]
    return np.stack([base[i % len(base)] for i in range(n)]).astype(np.uint8)


def _write_cirrus(path: Path, volume: np.ndarray) -> Path:
    """Store ``volume`` (B-scans, depth, A-scans) as Cirrus does: upside down, mirrored, B-scans reversed."""
    path.write_bytes(np.ascontiguousarray(volume[::-1, ::-1, ::-1]).tobytes())
    return path


# --- Zeiss Cirrus ------------------------------------------------------------------------------------


def test_cirrus_200x200_cube_is_read_with_its_geometry_orientation_and_name_fields(tmp_path):
    cube = _real_cube(200, 1024, 200)
    path = _write_cirrus(tmp_path / CUBE_NAME.format(a=200, b=200, eye="OS"), cube)
    (v,) = open_path(path)
    assert v.bscans.shape == (200, 1024, 200)
    np.testing.assert_array_equal(v.bscans, cube)  # flipped back exactly: not upside down, not mirrored
    assert v.laterality.value == "OS"
    assert (v.patient.patient_id, v.study.study_date) == ("P0042", "20161122")
    assert v.spacing.column == pytest.approx(6.0 / 200) and v.spacing.slice == pytest.approx(6.0 / 200)
    assert v.spacing.row == pytest.approx(2.0 / 1024)
    assert v.device.manufacturer == "Carl Zeiss Meditec"


def test_cirrus_geometry_from_size_alone_for_every_known_protocol(tmp_path):
    for g in cirrus.PROTOCOLS:
        assert cirrus.geometry(tmp_path / "renamed.img", g.n_bytes) == g
    # the old fixed 1024 x 512 reading would have taken a 200x200 cube as 78 "B-scans"
    assert cirrus.geometry(tmp_path / "x.img", 200 * 200 * 1024).a_scans == 200


def test_cirrus_512x128_without_protocol_in_the_name_is_read_by_size(tmp_path):
    cube = _real_cube(128, 1024, 512)
    (v,) = open_path(_write_cirrus(tmp_path / "exported.img", cube))
    assert v.bscans.shape == (128, 1024, 512)
    np.testing.assert_array_equal(v.bscans[[0, 64, 127]], cube[[0, 64, 127]])
    assert v.laterality.value == "unknown"


def test_cirrus_size_that_fits_no_protocol_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "scan.img"
    path.write_bytes(bytes(1024 * 512 * 7))  # the old reader took this as 7 B-scans
    with pytest.raises(E.NotOctError, match="fit no known Zeiss Cirrus protocol") as info:
        open_path(path)
    assert str(path) in str(info.value)


def test_cirrus_name_and_size_disagree(tmp_path):
    path = tmp_path / CUBE_NAME.format(a=512, b=128, eye="OD")
    path.write_bytes(bytes(200 * 200 * 1024))
    with pytest.raises(E.CorruptFileError, match="its name says a 512x128") as info:
        open_path(path)
    assert str(path) in str(info.value)


def test_64_mib_of_random_bytes_is_not_taken_for_a_cube(tmp_path):
    path = tmp_path / CUBE_NAME.format(a=512, b=128, eye="OD")
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 512 * 128 * 1024, dtype=np.uint8).tobytes())
    with pytest.raises(E.NotOctError, match="does not look like OCT") as info:
        open_path(path)
    assert str(path) in str(info.value)


def test_cirrus_file_of_one_value_holds_no_image(tmp_path):
    path = tmp_path / "blank.img"
    path.write_bytes(bytes(512 * 5 * 1024))
    with pytest.raises(E.EmptyInputError, match="holds no image"):
        open_path(path)


def test_the_axial_correlation_separates_oct_from_noise():
    oct_like = _real_cube(5, 1024, 512)
    noise = np.random.default_rng(0).integers(0, 256, oct_like.shape, dtype=np.uint8)
    assert cirrus.axial_correlation(oct_like) > 0.8
    assert abs(cirrus.axial_correlation(noise)) < 0.05


# --- Topcon .fds under numpy 2 -----------------------------------------------------------------------


def _chunk(name: bytes, body: bytes) -> bytes:
    return bytes([len(name)]) + name + struct.pack("<I", len(body)) + body


def _topcon_fds(path: Path, volume: np.ndarray, *, eye: int = 1) -> Path:
    """A minimal .fds with oct-converter's own binary structures (header, scan, patient, capture, params)."""
    from oct_converter.readers.binary_structs import fds_binary as fb

    n, h, w = volume.shape
    header = fb.header.build(dict(file_code="FOCT", file_type="FDA", major_ver=3, minor_ver=0))
    scan = fb.oct_header.build(
        dict(scan_mode=2, width=w, height=h, bits_per_pixel=16, number_slices=n, format=0, size=n * h * w * 2)
    )
    # oct-converter reshapes (width, height, slices) in Fortran order: B-scan after B-scan, row after row
    pixels = volume.astype("<u2").tobytes()
    patient = fb.patient_info_02_header.build(
        dict(
            patient_id="TP-7",
            first_name="Ann",
            last_name="Lee",
            mid_name="",
            sex=2,
            birth_date=[1961, 2, 3],
            occup_reg=[[0] * 20] * 2,
            r_date=[0, 0, 0],
            record_id=[0] * 16,
            lv_date=[0, 0, 0],
            physician=[[0] * 64] * 2,
            zip_code=[0] * 12,
            addr=[[0] * 48] * 2,
            phones=[[0] * 16] * 2,
            nx_date=[0] * 6,
            multipurpose_field=[[0] * 20] * 3,
            descp=[0] * 64,
            reserved=[0] * 32,
        )
    )
    capture = fb.capture_info_02_header.build(
        dict(eye=eye, scan_mode=2, session_id=1, label="", cap_date=[2024, 5, 6, 10, 11, 12])
    )
    params = fb.param_scan_04_header.build(
        dict(
            fixation=0,
            mirror_pos=0,
            polar=0,
            x_dimension_mm=6.0,
            y_dimension_mm=6.0,
            z_resolution_um=2.6,
            comp_eff_2=0.0,
            comp_eff_3=0.0,
            base_pos=0,
            used_calib_data=0,
        )
    )
    path.write_bytes(
        header
        + _chunk(b"@IMG_SCAN_03", scan + pixels)
        + _chunk(b"@PATIENT_INFO_02", patient)
        + _chunk(b"@CAPTURE_INFO_02", capture)
        + _chunk(b"@PARAM_SCAN_04", params)
        + b"\0"
    )
    return path


def _topcon_volume() -> np.ndarray:
    return (_real_cube(4, 64, 48).astype(np.uint16) * 100).astype(np.uint16)


def test_topcon_fds_reads_under_numpy_2(tmp_path):
    assert int(np.__version__.split(".")[0]) >= 2  # the environment the workaround is for
    volume = _topcon_volume()
    (v,) = open_path(_topcon_fds(tmp_path / "exam.fds", volume))
    np.testing.assert_array_equal(v.bscans, volume)
    assert v.laterality.value == "OS"
    assert (v.patient.patient_id, v.patient.name, v.patient.birth_date) == ("TP-7", "Lee^Ann", "19610203")
    assert v.study.study_date == "20240506"
    assert v.spacing.column == pytest.approx(6.0 / 48) and v.spacing.row == pytest.approx(0.0026)


def test_without_the_workaround_oct_converter_fails_on_every_topcon_file(tmp_path, monkeypatch):
    """The control: oct-converter's own FDS reader with the real numpy raises numpy 2's error."""
    import oct_converter.readers.fds as fds

    monkeypatch.setattr(fds, "np", np)
    path = _topcon_fds(tmp_path / "exam.fds", _topcon_volume())
    with pytest.raises(ValueError, match="fromstring"):
        fds.FDS(path)


def test_truncated_topcon_file_is_reported_as_damaged(tmp_path):
    path = _topcon_fds(tmp_path / "exam.fds", _topcon_volume())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(E.CorruptFileError, match="could not read this Topcon FDS") as info:
        open_path(path)
    assert str(path) in str(info.value)


# --- Heidelberg .vol --------------------------------------------------------------------------------


def _vol_bytes(
    volume: np.ndarray, *, scan_position: str = "OD", n_bscans: int | None = None, pattern: int = 3
) -> bytes:
    """A .vol file: the 2048-byte header in the published HSF-OCT layout (eyepy's ``vol_format`` field
    order; built with struct because eyepy's date adapters cannot build), B-scans by eyepy's own
    ``bscan_format``."""
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import bscan_format

    n, h, w = volume.shape
    exam = dt.datetime(2023, 4, 5)
    ole = lambda d: (d - dt.datetime(1899, 12, 30)).days  # noqa: E731 - HEYEX float dates: days since 1899-12-30
    filetime = int((exam - dt.datetime(1601, 1, 1)).total_seconds() * 10_000_000)
    header = struct.pack(
        "<12s3I3d2I2dId4sQiI16s16sI24sdI24sd4I34s",
        b"HSF-OCT-103",
        w,
        n if n_bscans is None else n_bscans,
        h,
        6.0 / w,
        0.12,
        0.0039,
        32,
        32,
        0.02,
        0.02,
        30,
        0.0,
        scan_position.encode(),
        filetime,
        pattern,
        256,
        b"123",
        b"",
        9,
        b"HV-31",
        float(ole(dt.datetime(1955, 6, 7))),
        0,
        b"",
        float(ole(exam)),
        0,
        0,
        0,
        0,
        b"",
    )
    header = header.ljust(2048, b"\0")
    bscans = b"".join(
        bscan_format.build(
            dict(
                version="HSF-OCT-103",
                bscan_hdr_size=256,
                start_x=0.0,
                start_y=0.12 * i,
                end_x=6.0,
                end_y=0.12 * i,
                num_seg=0,
                quality=30.0,
                shift=0,
                iv_transformation=[0.0] * 6,
                layer_segmentations=np.zeros((0, w), np.float32),
                data=to_vol_intensity(b.astype(np.float32) / 255.0),
            ),
            size_x=w,
            size_y=h,
        )
        for i, b in enumerate(volume)
    )
    return header + bytes(32 * 32) + bscans


def test_heidelberg_vol_is_read_with_eye_and_scale(tmp_path):
    volume = _real_cube(3, 64, 40)
    path = tmp_path / "scan.vol"
    path.write_bytes(_vol_bytes(volume, scan_position="OS"))
    (v,) = open_path(path)
    assert v.bscans.shape == (3, 64, 40)
    assert np.abs(v.bscans.astype(int) - volume.astype(int)).mean() < 2  # eyepy's intensity round trip
    assert v.laterality.value == "OS"
    assert v.spacing.column == pytest.approx(6.0 / 40) and v.spacing.row == pytest.approx(0.0039)
    assert v.spacing.slice == pytest.approx(0.12)
    assert (v.patient.patient_id, v.patient.birth_date, v.study.study_date) == ("HV-31", "19550607", "20230405")


def test_vol_header_claiming_a_huge_volume_is_refused_before_reading(tmp_path):
    raw = bytearray(_vol_bytes(_real_cube(2, 32, 32)))
    struct.pack_into("<3I", raw, 12, 5000, 5000, 5000)  # 5000 B-scans of 5000 x 5000
    path = tmp_path / "bomb.vol"
    path.write_bytes(bytes(raw))
    with pytest.raises(E.ImageTooLargeError) as info:
        open_path(path)
    assert str(path) in str(info.value)


def test_truncated_vol_is_refused_with_the_sizes(tmp_path):
    path = tmp_path / "cut.vol"
    path.write_bytes(_vol_bytes(_real_cube(3, 64, 40))[:-5000])
    with pytest.raises(E.CorruptFileError, match="truncated") as info:
        open_path(path)
    assert str(path) in str(info.value)


def test_radial_vol_scan_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "star.vol"
    path.write_bytes(_vol_bytes(_real_cube(2, 32, 32), pattern=5))
    with pytest.raises(E.UnsupportedFormatError, match="radial"):
        open_path(path)


# --- Heidelberg XML export --------------------------------------------------------------------------


def _date_xml(d: dt.date) -> str:
    return f"<Date><Year>{d.year}</Year><Month>{d.month}</Month><Day>{d.day}</Day></Date>"


def _heyex_export(folder: Path, volume: np.ndarray, *, eye: str = "R", url_of=None) -> Path:
    """A HEYEX XML export: B-scan TIFFs, a localizer TIFF and the XML that references them."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = volume.shape
    Image.fromarray(np.full((64, 64), 80, np.uint8)).save(folder / "loc.tif")
    images = [
        "<Image><ImageNumber>0</ImageNumber><ImageType><Type>LOCALIZER</Type></ImageType>"
        "<OphthalmicAcquisitionContext><Width>64</Width><Height>64</Height><ScaleX>0.1</ScaleX>"
        "<ScaleY>0.1</ScaleY><Angle>30</Angle><Focus>0.5</Focus></OphthalmicAcquisitionContext>"
        "<ImageData><ExamURL>C:\\HEYEX\\E\\loc.tif</ExamURL></ImageData></Image>"
    ]
    for i, b in enumerate(volume):
        name = f"b{i:03d}.tif"
        Image.fromarray(b).save(folder / name)
        url = url_of(i, name) if url_of else f"C:\\HEYEX\\E\\{name}"
        y = 0.25 * i
        images.append(
            f"<Image><ImageNumber>{i + 1}</ImageNumber><ImageType><Type>OCT</Type></ImageType>"
            f"<OphthalmicAcquisitionContext><Width>{w}</Width><Height>{h}</Height><ScaleX>0.0114</ScaleX>"
            f"<ScaleY>0.0039</ScaleY><Start><Coord><X>0</X><Y>{y}</Y></Coord></Start>"
            f"<End><Coord><X>5.8</X><Y>{y}</Y></Coord></End><ImageQuality>30</ImageQuality>"
            f"</OphthalmicAcquisitionContext><ImageData><ExamURL>{url}</ExamURL></ImageData></Image>"
        )
    exam = dt.date(2022, 8, 9)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<HEDX><BODY><SWVersion><Version>6.16</Version></SWVersion>'
        "<Patient><ID>5</ID><PatientID>HX-0042</PatientID><LastName>Doe</LastName><FirstNames>Jane</FirstNames>"
        f"<Birthdate>{_date_xml(dt.date(1950, 3, 4))}</Birthdate>"
        f"<Study><StudyDate>{_date_xml(exam)}</StudyDate><Series><ID>77</ID><Laterality>{eye}</Laterality>"
        f"<ReferenceSeries><ID>77</ID><ExamDate>{_date_xml(exam)}</ExamDate></ReferenceSeries>"
        "<ThicknessGrid><Type>0</Type></ThicknessGrid><ProgID>P1</ProgID>"
        + "".join(images)
        + "</Series></Study></Patient></BODY></HEDX>\n"
    )
    path = folder / "77.xml"
    path.write_text(xml, encoding="utf-8")
    return path


def test_heidelberg_xml_export_folder_is_one_volume_with_eye_and_scale(tmp_path):
    volume = _real_cube(5, 96, 128)
    _heyex_export(tmp_path / "export", volume, eye="L")
    (v,) = open_path(tmp_path / "export")  # the localizer is not a B-scan stack of its own
    np.testing.assert_array_equal(v.bscans, volume)
    assert v.laterality.value == "OS"
    assert v.spacing.column == pytest.approx(0.0114) and v.spacing.row == pytest.approx(0.0039)
    assert v.spacing.slice == pytest.approx(0.25)
    assert (v.patient.patient_id, v.patient.name, v.patient.birth_date) == ("HX-0042", "Doe^Jane", "19500304")
    assert v.study.study_date == "20220809"
    assert len(v.source_files) == 6  # the XML and its five B-scans


def test_xml_export_opened_by_its_xml_file(tmp_path):
    xml = _heyex_export(tmp_path / "export", _real_cube(3, 64, 64))
    (v,) = open_path(xml)
    assert v.bscans.shape == (3, 64, 64) and v.laterality.value == "OD"


def test_xml_reference_leaving_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.tif").write_bytes(b"not to be opened")
    xml = _heyex_export(tmp_path / "export", _real_cube(2, 32, 32), url_of=lambda i, n: "../secret.tif")
    with pytest.raises(E.CorruptFileError, match="leaves the export's folder") as info:
        open_path(xml)
    assert str(xml) in str(info.value)


def test_xml_export_with_a_missing_bscan_names_it(tmp_path):
    xml = _heyex_export(tmp_path / "export", _real_cube(3, 32, 32))
    (xml.parent / "b001.tif").unlink()
    with pytest.raises(E.CorruptFileError, match="b001.tif") as info:
        open_path(xml)
    assert str(xml) in str(info.value)


def test_xml_export_with_a_bscan_bomb_is_refused_before_decoding(tmp_path):
    xml = _heyex_export(tmp_path / "export", _real_cube(2, 32, 32))
    Image.new("L", (9000, 9000)).save(xml.parent / "b001.tif", compression="tiff_deflate")
    with pytest.raises(E.InputError) as info:
        open_path(xml)
    assert "different sizes" in str(info.value) or "exceeds" in str(info.value)


def test_other_xml_files_stay_ignored_sidecars(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for i, b in enumerate(_real_cube(3, 64, 64)):
        Image.fromarray(b).save(folder / f"{i:03d}.png")
    (folder / "notes.xml").write_text("<notes>device log</notes>")
    (v,) = open_path(folder)
    assert len(v.bscans) == 3
