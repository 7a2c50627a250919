# OCT Screen: the two commands of the README.
#   make run   set up (virtual environment + install), open the bundled demo exam in the desktop app
#              and screen it (on a machine without a display: screen it headless into demo-output/)
#   make test  set up and run the whole test suite
# Other targets: make setup, make gui, make screen-demo, make bench, make clean.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := resources/samples/oct2017-bscans
OUT    ?= demo-output

.PHONY: setup sysdeps run gui screen-demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,train,vendor,speed,cluster]'
	touch $(STAMP)

# dcmtk (dcmdump), dicom3tools (dciodvfy) and poppler-utils (pdftoppm, pdftotext) check our DICOM and PDF
# output in tests;
# orthanc (with orthanc-dicomweb, its DICOMweb plugin) is the real PACS the DICOM networking tests talk to
# (started on loopback, never as a service),
# openssl makes their TLS test's certificate;
# the libxcb ones are what Qt's X11 plugin needs for a real window (`octscreen gui` names any missing).
sysdeps:
	@if ! command -v dcmdump >/dev/null || ! command -v dciodvfy >/dev/null || ! command -v pdftotext >/dev/null || ! command -v Orthanc >/dev/null || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || ! command -v openssl >/dev/null || ! ldconfig -p | grep -q libxcb-icccm; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk dicom3tools poppler-utils orthanc orthanc-dicomweb openssl libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 >/dev/null; \
	  else echo "note: install dcmtk, dicom3tools and poppler-utils (DICOM/PDF conformance tests), orthanc, orthanc-dicomweb and openssl (DICOM networking and DICOMweb tests, TLS) and libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 (GUI window)"; fi; \
	fi

setup: $(STAMP)

run: setup sysdeps
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || [ "$$(uname)" = Darwin ]; then \
	  $(BIN)/octscreen gui --demo; \
	else \
	  echo "no display found: screening the demo exam headless into $(OUT)/"; \
	  $(BIN)/octscreen screen $(DEMO) --out $(OUT) --overwrite; \
	fi

gui: setup
	$(BIN)/octscreen gui --demo

screen-demo: setup
	$(BIN)/octscreen screen $(DEMO) --out $(OUT) --overwrite

test: setup sysdeps
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_end_to_end.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
