"""CT scans and the synthetic phantom (CT frame: LPS patient frame, metres)."""

from bronchonav.ct.lungs import LungModel
from bronchonav.ct.phantom import PhantomConfig, generate_phantom_tree, phantom_config
