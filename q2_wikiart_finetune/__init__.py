"""Q2: fine-tuning AlexNet on the WikiArt painting styles of the course (VT ECE6504 F15, HW2)."""

import tools  # noqa: F401  (quiets pycaffe's set-up logging before caffe loads)
