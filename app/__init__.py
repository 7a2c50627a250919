"""OCT Screen application layer: the desktop GUI (PySide6) and the ``octscreen`` command line."""
