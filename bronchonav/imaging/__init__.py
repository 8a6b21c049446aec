"""Simulated imaging: a virtual bronchoscope camera at the catheter tip.

Modules
-------
camera
    :class:`CameraIntrinsics` and :class:`TipCamera`: colour + depth frames ray-cast on the lumen
    mesh (headless, CPU).
flythrough
    Camera poses along a route, frames written as PNG and an animated GIF.
depth_cloud
    Depth image → point cloud in the camera frame.
tube_mesh
    Lumen surface of a tree's tube model (union of capsules), the exact geometry of a tree
    given by centerlines and radii.

Registration of the depth clouds (the ``camera`` scenario) is :mod:`bronchonav.registration.camera`.
"""
