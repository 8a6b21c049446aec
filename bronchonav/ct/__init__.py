"""CT scans (CT frame: LPS patient frame, metres). The synthetic phantoms are in
:mod:`bronchonav.ct.phantom` (a layer above the map format: it builds its ground-truth map)."""

from bronchonav.ct.io import (DicomSeries, check_ct, ct_to_index, dicom_series, index_to_ct,
                              read_ct, spacing_m, write_dicom_series)
