"""Q2: fine-tuning AlexNet on the WikiArt painting styles of the course (VT ECE6504 F15, HW2)."""
