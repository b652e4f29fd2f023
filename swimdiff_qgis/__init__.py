"""QGIS side of SwiMDiff: toolbar, dialogs, tasks and Processing algorithms (never imports torch)."""
