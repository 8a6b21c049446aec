"""CT scans and the synthetic phantom (CT frame: LPS patient frame, metres)."""

from bronchonav.ct.lungs import LungModel
from bronchonav.ct.phantom import (Phantom, PhantomConfig, generate_phantom_tree, make_phantom,
                                   phantom_config, phantom_ground_truth_map)
from bronchonav.ct.render import VolumeGrid
from bronchonav.ct.io import (check_ct, ct_to_index, index_to_ct, read_ct, spacing_m,
                              write_dicom_series)
