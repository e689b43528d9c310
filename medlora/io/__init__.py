"""Input stage: decoding DICOM (and other medical formats) into medlora's array convention.

Every reader returns channel-first ``float32`` pixels indexed ``[row, column]`` exactly like
pydicom's ``pixel_array``, plus a dictionary of non-identifying technical metadata.
"""
