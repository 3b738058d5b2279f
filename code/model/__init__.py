"""CDVD-TSP model package: PWC-Net flow, warping, the temporal sharpness prior and the restoration net."""
