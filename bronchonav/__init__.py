"""BronchoNav: an open-source digital twin for robotic bronchoscopy.

The core library (this package minus :mod:`bronchonav.ros`) has no ROS dependency:

- :mod:`bronchonav.ct` reads chest CT scans and generates the synthetic phantom,
- :mod:`bronchonav.airway` segments the airway and builds the tree graph,
- :mod:`bronchonav.maps` saves and loads map folders,
- :mod:`bronchonav.catheter` simulates the tendon-driven Cosserat-rod catheter,
- :mod:`bronchonav.planning` plans device-aware routes to nodules,
- :mod:`bronchonav.registration` simulates intra-operative sensing and registers it to the twin.

Units are SI (m, rad, N, s); coordinates are in the CT frame (LPS patient frame, metres) unless a
name or docstring says otherwise.
"""

__version__ = "0.1.0"
