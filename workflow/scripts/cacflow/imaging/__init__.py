"""From HU volumes to images: the heart segmentation and the three image datasets."""
