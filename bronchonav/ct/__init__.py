"""CT scans and the synthetic phantom (CT frame: LPS patient frame, metres)."""

from bronchonav.ct.io import check_ct, ct_to_index, index_to_ct, read_ct, spacing_m
