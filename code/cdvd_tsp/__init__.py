"""CDVD-TSP video deblurring as a library: ``from cdvd_tsp import Deblurrer`` (docs/api.md)."""

from cdvd_tsp.deblurrer import DeblurError, Deblurrer

__all__ = ["DeblurError", "Deblurrer"]
