"""OCT Screen core library: volumes, readers, simulator, models, screening, reports.
No Qt, no command-line parsing, no print: logging only."""

__version__ = "0.1.0"
