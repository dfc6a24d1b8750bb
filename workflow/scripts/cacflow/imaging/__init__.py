"""From HU volumes to images: the heart segmentation and the three image datasets."""


# Here rather than in datasets: labels and png raise it too, and datasets imports them.
class DatasetError(ValueError):
    """Inputs that cannot make a patient's datasets (shapes, labels, instance numbers)."""
