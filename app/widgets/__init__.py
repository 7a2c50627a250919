"""Widgets of the desktop app. Each one observes and commands :class:`app.widgets.state.ViewerState`."""
