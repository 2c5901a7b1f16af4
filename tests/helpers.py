"""Small assertions helpers shared by the test modules."""
import numpy as np


def job_mask(jobs, shape) -> np.ndarray:
    """``H x W`` bool mask of the union of the jobs' frame boxes (``WarpJob.frame_bbox``)."""
    m = np.zeros(shape[:2], bool)
    for j in jobs:
        box = j.frame_bbox(shape)
        if box is not None:
            x0, y0, x1, y1 = box
            m[y0:y1, x0:x1] = True
    return m
