"""ctp-node: CT perfusion maps and acute-stroke volumes as a DICOM node."""

__version__ = "0.1.0"
