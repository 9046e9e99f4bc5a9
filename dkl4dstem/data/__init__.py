"""The data: survey image, patches around each scan position, diffraction patterns and calibrations, file readers."""
